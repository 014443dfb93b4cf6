//! The layering of the stages (docs/architecture.md, "Module graph"): each module of
//! `src/` may use only the modules before it in [`ORDER`], so the data path
//! source → manifest → validate → desired → state (observe) → plan → render/apply → drift
//! stays a straight line and no two stages import each other.

#![allow(clippy::expect_used, clippy::unwrap_used)] // test code: a failed expectation is the report

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The allowed order, lowest layer first. A module may use any module before it.
const ORDER: &[&str] = &[
    "diagnostic", // positions, diagnostics, terminal styles
    "source",     // files of a revision from git or disk
    "manifest",   // YAML to typed objects; value syntax; the host index
    "validate",   // every rule over a whole revision
    "desired",    // compile: the desired state
    "state",      // the live state in Redis: keys, images, the store, the write planner
    "plan",       // object plans between two states
    "render",     // text, JSON and Markdown of plans
    "deploy",     // worker code to hosts over SSH
    "apply",      // one reconcile
    "drift",      // drift and status
    "celery",     // Celery messages and results
    "agent",      // the host agent
    "beat",       // Celery Beat: forecast and supervision
    "runs",       // run history: task events, the collector, expectations
    "daemon",     // celeroot watch
    "init",       // scaffolding
    "edit",       // changing manifests in the work tree
    "import",     // cl.yaml to manifests
    "contract",   // the JSON documents of outputs and their schemas
    "cli",        // argument parsing and printing
];

fn sources(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
            .expect("read src dir")
            .flatten()
            .map(|e| e.path())
            .collect();
        entries.sort();
        for e in entries {
            sources(&e, out);
        }
    } else if path.extension().is_some_and(|e| e == "rs") {
        out.push(path.to_path_buf());
    }
}

/// The crate modules a file refers to: `crate::NAME…` and the names in `use crate::{…}`
/// groups, outside comments.
fn references(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let code: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut rest = code.as_str();
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Top-level names of the group, up to its closing brace.
            let mut depth = 0;
            let mut name = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    c if depth == 0 && (c.is_alphanumeric() || c == '_') => name.push(c),
                    ',' if depth == 0 => {
                        out.insert(std::mem::take(&mut name));
                    }
                    ':' if depth == 0 && !name.is_empty() => {
                        out.insert(std::mem::take(&mut name));
                    }
                    _ => {}
                }
            }
            if !name.is_empty() {
                out.insert(name);
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            out.insert(name);
        }
    }
    out.retain(|n| ORDER.contains(&n.as_str()));
    out
}

#[test]
fn every_stage_uses_only_the_stages_before_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut violations = Vec::new();
    for (i, module) in ORDER.iter().enumerate() {
        let dir = src.join(module);
        let file = src.join(format!("{module}.rs"));
        let mut files = Vec::new();
        sources(if dir.is_dir() { &dir } else { &file }, &mut files);
        assert!(!files.is_empty(), "no sources for module {module}");
        for f in files {
            let text = std::fs::read_to_string(&f).expect("read source");
            for used in references(&text) {
                let j = ORDER.iter().position(|m| *m == used).unwrap_or(0);
                if used != *module && j > i {
                    violations.push(format!(
                        "{} uses crate::{used}, a later stage than {module}",
                        f.strip_prefix(&src).unwrap_or(&f).display()
                    ));
                }
            }
        }
    }
    assert!(
        violations.is_empty(),
        "the layering of docs/architecture.md is broken:\n{}",
        violations.join("\n")
    );
}

/// The CLI only parses arguments and prints: it talks to neither Redis nor git itself,
/// runs no process and writes no file of its own.
#[test]
fn the_cli_uses_no_redis_or_git2_directly() {
    let mut files = Vec::new();
    sources(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src/cli"),
        &mut files,
    );
    let mut found = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).expect("read source");
        for (n, line) in text.lines().enumerate() {
            let code = line.trim_start();
            if code.starts_with("//") {
                continue;
            }
            // Besides printing, the CLI reads the files its arguments name (`import
            // FILE`, `watch --webhook-secret-file`) and writes what it is asked to print
            // into a directory (`man DIR`); every other I/O is the library's.
            let io = [
                "std::process::Command",
                "tempfile::",
                "std::fs::write",
                "File::open",
                "File::create",
                "TcpStream",
                "/dev/urandom",
                "/etc/hostname",
            ];
            if code.contains("redis::")
                || code.contains("git2::")
                || code.starts_with("use redis")
                || code.starts_with("use git2")
                || io.iter().any(|p| code.contains(p))
            {
                found.push(format!("{}:{}: {code}", f.display(), n + 1));
            }
        }
    }
    assert!(
        found.is_empty(),
        "src/cli does I/O itself (redis, git2, processes, files):\n{}",
        found.join("\n")
    );
}

#[test]
fn every_module_of_src_is_placed_in_the_order() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut missing = Vec::new();
    for e in std::fs::read_dir(&src).expect("read src").flatten() {
        let name = e
            .file_name()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        if name == "lib" || name == "main" {
            continue;
        }
        if !ORDER.contains(&name.as_str()) {
            missing.push(name);
        }
    }
    assert!(
        missing.is_empty(),
        "place these modules in ORDER: {missing:?}"
    );
}

#[test]
fn the_reference_scanner_reads_paths_and_groups() {
    let r = references("use crate::{state::Keys, plan, manifest::{Kind, ObjectId}};\nlet x = crate::desired::f();\n// crate::cli in a comment\n");
    let want: BTreeSet<String> = ["state", "plan", "manifest", "desired"]
        .iter()
        .map(std::string::ToString::to_string)
        .collect();
    assert_eq!(r, want);
}

/// The sibling files of a stage a file refers to: `super::NAME` and `crate::STAGE::NAME`.
fn sibling_references(text: &str, stage: &str, siblings: &BTreeSet<String>) -> BTreeSet<String> {
    let code: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut out = BTreeSet::new();
    for prefix in ["super::".to_string(), format!("crate::{stage}::")] {
        let mut rest = code.as_str();
        while let Some(i) = rest.find(&prefix) {
            rest = &rest[i + prefix.len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if siblings.contains(&name) {
                out.insert(name);
            }
        }
    }
    out
}

/// Within a stage, no two files use each other (the parent `mod.rs` aside, which declares
/// and re-exports its children): `manifest/node.rs` knows nothing of `manifest/yaml.rs`.
#[test]
fn no_two_files_of_a_stage_use_each_other() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut cycles = Vec::new();
    for stage in ORDER {
        let dir = src.join(stage);
        if !dir.is_dir() {
            continue;
        }
        let names: BTreeSet<String> = std::fs::read_dir(&dir)
            .expect("read stage dir")
            .flatten()
            .filter_map(|e| {
                let p = e.path();
                let stem = p.file_stem()?.to_str()?.to_string();
                (p.extension().is_some_and(|x| x == "rs") && stem != "mod" && stem != "tests")
                    .then_some(stem)
            })
            .collect();
        let uses: Vec<(String, BTreeSet<String>)> = names
            .iter()
            .map(|n| {
                let text = std::fs::read_to_string(dir.join(format!("{n}.rs"))).expect("read");
                (n.clone(), sibling_references(&text, stage, &names))
            })
            .collect();
        for (a, used) in &uses {
            for b in used.iter().filter(|b| *b > a) {
                if uses.iter().any(|(n, u)| n == b && u.contains(a)) {
                    cycles.push(format!("{stage}/{a}.rs and {stage}/{b}.rs use each other"));
                }
            }
        }
    }
    assert!(cycles.is_empty(), "{}", cycles.join("\n"));
}
