//! The invalid-manifest corpus: every file in tests/fixtures/invalid is added to the
//! bundled example as `manifests/case.yaml` (after optional `# remove: PATH` lines take
//! files away), and `celeroot validate` must fail with exactly the `# expect:` errors:
//! `# expect: PATH:LINE:COL: MESSAGE` (MESSAGE is matched as a substring of the
//! annotation text, which is the message followed by its help), or `# expect: -: MESSAGE`
//! for problems that concern no single file.

use crate::common::{run, TestRepo};

struct Case {
    name: String,
    text: String,
    removes: Vec<String>,
    expects: Vec<(String, String)>,
}

fn cases() -> Vec<Case> {
    let dir = crate::common::project_root().join("tests/fixtures/invalid");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("corpus dir") {
        let path = entry.expect("entry").path();
        let text = std::fs::read_to_string(&path).expect("read case");
        let mut removes = Vec::new();
        let mut expects = Vec::new();
        for line in text.lines() {
            if let Some(r) = line.strip_prefix("# remove: ") {
                removes.push(r.to_string());
            }
            if let Some(e) = line.strip_prefix("# expect: ") {
                let (loc, msg) = e.split_once(": ").expect("expect line is `LOC: MESSAGE`");
                expects.push((loc.to_string(), msg.to_string()));
            }
        }
        let name = path
            .file_stem()
            .expect("stem")
            .to_string_lossy()
            .into_owned();
        assert!(
            !expects.is_empty(),
            "{name}: a corpus case needs at least one `# expect:` line"
        );
        out.push(Case {
            name,
            text,
            removes,
            expects,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// `(location, text)` of each `::error` annotation.
fn annotations(stdout: &str) -> Vec<(String, String)> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("::error"))
        .map(|rest| {
            let (props, msg) = rest.split_once("::").expect("annotation has a message");
            let mut file = None;
            let mut line = None;
            let mut col = None;
            for p in props.trim().split(',').filter(|p| !p.is_empty()) {
                let (k, v) = p.split_once('=').expect("property");
                match k {
                    "file" => file = Some(v.to_string()),
                    "line" => line = Some(v.to_string()),
                    "col" => col = Some(v.to_string()),
                    _ => {}
                }
            }
            let loc = match (file, line, col) {
                (Some(f), Some(l), Some(c)) => format!("{f}:{l}:{c}"),
                (Some(f), Some(l), None) => format!("{f}:{l}"),
                (Some(f), None, _) => f,
                (None, ..) => "-".to_string(),
            };
            (loc, msg.to_string())
        })
        .collect()
}

#[test]
fn corpus_is_large_enough() {
    assert!(
        cases().len() >= 30,
        "the corpus must hold at least 30 invalid manifests"
    );
}

#[test]
fn every_invalid_manifest_fails_with_its_located_diagnostics() {
    let mut failures = Vec::new();
    for case in cases() {
        let mut repo = TestRepo::with_example();
        for r in &case.removes {
            repo.remove(r);
        }
        repo.write("manifests/case.yaml", &case.text);
        repo.commit("case");
        let mut cmd = repo.cmd();
        cmd.args(["validate", "--format", "github"]);
        let (output, code) = run(cmd);
        let got = annotations(&output);
        let mut problems = Vec::new();
        if code != 1 {
            problems.push(format!("exit status {code}, expected 1"));
        }
        if got.len() != case.expects.len() {
            problems.push(format!(
                "{} error(s), expected {}",
                got.len(),
                case.expects.len()
            ));
        }
        for (loc, msg) in &case.expects {
            if !got
                .iter()
                .any(|(l, m)| l == loc && m.contains(msg.as_str()))
            {
                problems.push(format!("missing error at {loc}: {msg}"));
            }
            // The human rendering on stderr points at the same place and shows the source line.
            if loc != "-" && !output.contains(&format!("--> {loc}\n")) {
                problems.push(format!("stderr does not point at {loc}"));
            }
        }
        if !output.contains("nothing was changed") {
            problems.push("no closing summary line".into());
        }
        if !problems.is_empty() {
            failures.push(format!(
                "{}:\n  {}\n{output}",
                case.name,
                problems.join("\n  ")
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
