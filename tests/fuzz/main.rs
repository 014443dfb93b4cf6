//! A time-bounded mutation fuzzer for the parsers that read untrusted input (issue 14):
//! the manifest loader (validate + compile), the `cl.yaml` importer, the webhook signature
//! check and payload parser, and the Redis URL parser.
//!
//! Stable Rust, no sanitizer: each target starts from its corpus (`tests/fuzz/corpus/<target>/`,
//! plus the bundled manifests for `manifest`), mutates inputs (byte flips, inserts and
//! deletions, repeated ranges, splices of two inputs, and tokens of the input's syntax) and
//! fails on a panic or on an input slower than `SLOW` (a hang or quadratic blow-up, the kind
//! of finding 2). A failing input is written to `target/fuzz-findings/` and printed.
//!
//! `CELEROOT_FUZZ_SECONDS` (default 3) sets the time per target, `CELEROOT_FUZZ_SEED` the
//! seed (printed on every run), `CELEROOT_FUZZ_TARGETS` a comma-separated selection.
//! `scripts/fuzz.sh` runs it for longer; scripts/test.sh (and so CI) for 30 s each.

#![allow(clippy::expect_used, clippy::unwrap_used)] // test code: a failed expectation is the report

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// An input slower than this is a finding.
const SLOW: Duration = Duration::from_secs(2);
/// Inputs never grow past this (the manifest loader's own file limit is 1 MiB).
const MAX_LEN: usize = 64 * 1024;

/// xorshift64*: reproducible from the printed seed; no quality needed beyond variety.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

struct Target {
    name: &'static str,
    tokens: &'static [&'static str],
    run: fn(&[u8]),
}

const YAML_TOKENS: &[&str] = &[
    ": ",
    "- ",
    "\n",
    "\n  ",
    "\n    ",
    "{",
    "}",
    "[",
    "]",
    ",",
    "&a ",
    "*a",
    "<<: *a",
    "!!str ",
    "!!binary ",
    "---\n",
    "...\n",
    "\"",
    "'",
    "|\n  ",
    ">-\n  ",
    "#",
    "~",
    "null",
    "true",
    "0x1f",
    "1e999",
    "-1",
    "99999999999999999999",
    "\t",
    "\\u0000",
    "\u{feff}",
    "é",
    "%YAML 1.2\n",
    "kind: Host",
    "kind: Role",
    "kind: Schedule",
    "kind: Cluster",
    "apiVersion: celeroot.io/v1",
    "name: ",
    "roles: [",
    "cron: \"",
    "every: ",
    "timezone: ",
    "__type__: ",
    "selector: ",
    "targets:\n    - ",
    "labels:\n    ",
    "deployment:\n    ",
    "address: ",
    "../",
    "\u{1b}[2J",
];
const JSON_TOKENS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ":",
    ",",
    "\"ref\"",
    "\"refs/heads/main\"",
    "null",
    "true",
    "1e999",
    "\"\\u0000\"",
    "\"\\ud800\"",
    "-0",
    "[[[[[[[[",
    "\"",
    "\\",
];
const URL_TOKENS: &[&str] = &[
    "redis://",
    "rediss://",
    "redis+unix://",
    "unix://",
    ":",
    "@",
    "/",
    "?",
    "&",
    "=",
    "%",
    "%4",
    "%zz",
    "%e9",
    "é",
    "[",
    "]",
    "::1",
    "pass=",
    "password=",
    "user=",
    "db=",
    "protocol=resp3",
    "#",
    "127.0.0.1",
    ":6379",
    "/0",
    "/99999999999999999999",
];

fn manifest(data: &[u8]) {
    let text = String::from_utf8_lossy(data).into_owned();
    let mut files: Vec<celeroot::source::SourceFile> = celeroot::init::EXAMPLE_MANIFESTS
        .iter()
        .filter(|(p, _)| p.starts_with("manifests/") && !p.ends_with("hosts/web01.yaml"))
        .map(|(p, t)| celeroot::source::SourceFile {
            path: p.to_string(),
            text: t.to_string(),
        })
        .collect();
    files.push(celeroot::source::SourceFile {
        path: "manifests/hosts/web01.yaml".into(),
        text,
    });
    let r = celeroot::compile_snapshot(celeroot::source::Snapshot {
        label: "fuzz".into(),
        commit: None,
        files,
    });
    // Every located error names one of the files given.
    if let Err(celeroot::CompileError::Invalid { diagnostics, .. }) = &r {
        for d in diagnostics {
            assert!(
                d.file
                    .as_deref()
                    .is_none_or(|f| f.starts_with("manifests/")),
                "{d:?}"
            );
        }
    }
}

fn import(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    for allow_unknown in [false, true] {
        if let Ok(i) = celeroot::import::convert(
            "cl.yaml",
            &text,
            celeroot::import::Options { allow_unknown },
        ) {
            // The password of the old format never reaches a warning.
            let _ = format!("{i:?}");
        }
    }
}

fn webhook(data: &[u8]) {
    use celeroot::daemon::webhook::{parse, sign, verify, Provider};
    // The first line is a header value, the rest the body.
    let (head, body) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &data[..0]),
    };
    let head = String::from_utf8_lossy(head).into_owned();
    let secret = b"fuzz-secret";
    let good = sign(secret, body);
    for provider in [
        Provider::GitHub,
        Provider::Gitea,
        Provider::GitLab,
        Provider::Generic,
    ] {
        for value in [
            head.as_str(),
            good.as_str(),
            good.trim_start_matches("sha256="),
        ] {
            let header = |name: &str| -> Option<&str> {
                match name {
                    "x-github-event" | "x-gitea-event" | "x-forgejo-event" => Some("push"),
                    "x-gitlab-event" => Some("Push Hook"),
                    "x-gitlab-token" => Some(value),
                    _ if name.contains("signature") => Some(value),
                    _ if name.contains("delivery") || name.contains("uuid") => Some(value),
                    _ => None,
                }
            };
            if verify(provider, header, body, secret).is_ok() {
                let _ = parse(provider, header, body);
            }
            let _ = parse(provider, header, body);
        }
    }
    // A signature made with the secret always verifies; a changed body never does.
    let header = |name: &str| (name == "x-hub-signature-256").then_some(good.as_str());
    assert!(verify(Provider::GitHub, header, body, secret).is_ok());
    let mut other = body.to_vec();
    other.push(b'x');
    assert!(verify(Provider::GitHub, header, &other, secret).is_err());
}

fn redis_url(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(u) = celeroot::state::RedisUrl::parse(&text) {
        let _ = (u.redacted(), u.db(), format!("{u} {u:?}"));
        let agent = u.with_credentials("celeroot.c.h", "pw");
        let _ = celeroot::state::RedisUrl::parse(&agent);
    }
    // A marked password never shows, whatever surrounds it.
    let marked = format!("redis://u:PW{text}QZ@127.0.0.1:6379/0");
    let secret = format!("PW{text}QZ");
    match celeroot::state::RedisUrl::parse(&marked) {
        Ok(u) => assert!(
            !u.redacted().contains(&secret) || secret.is_empty(),
            "{}",
            u.redacted()
        ),
        Err(e) => assert!(!e.contains(&secret), "{e}"),
    }
}

const TARGETS: &[Target] = &[
    Target {
        name: "manifest",
        tokens: YAML_TOKENS,
        run: manifest,
    },
    Target {
        name: "import",
        tokens: YAML_TOKENS,
        run: import,
    },
    Target {
        name: "webhook",
        tokens: JSON_TOKENS,
        run: webhook,
    },
    Target {
        name: "redis_url",
        tokens: URL_TOKENS,
        run: redis_url,
    },
];

fn corpus(name: &str) -> Vec<Vec<u8>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out = Vec::new();
    let mut dirs = vec![root.join("tests/fuzz/corpus").join(name)];
    if name == "manifest" {
        dirs.push(root.join("tests/fixtures/invalid"));
        dirs.push(root.join("manifests/hosts"));
        dirs.push(root.join("manifests/schedules"));
    }
    for d in dirs {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&d)
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        files.sort();
        out.extend(files.iter().filter_map(|f| std::fs::read(f).ok()));
    }
    if name == "import" {
        out.extend(std::fs::read(root.join("examples/cl.yaml")).ok());
    }
    out
}

fn mutate(rng: &mut Rng, input: &mut Vec<u8>, pool: &[Vec<u8>], tokens: &[&str]) {
    for _ in 0..=rng.below(4) {
        let len = input.len();
        match rng.below(7) {
            0 if len > 0 => {
                let i = rng.below(len);
                input[i] ^= 1 << rng.below(8);
            }
            1 => {
                let i = rng.below(len + 1);
                input.insert(i, (rng.next() & 0xff) as u8);
            }
            2 if len > 0 => {
                let i = rng.below(len);
                let n = rng.below((len - i).min(64) + 1);
                input.drain(i..i + n);
            }
            3 if len > 0 => {
                // Repeat a range (deep nesting, long names).
                let i = rng.below(len);
                let n = rng.below((len - i).min(32)) + 1;
                let chunk = input[i..i + n].to_vec();
                for _ in 0..=rng.below(64) {
                    input.splice(i..i, chunk.iter().copied());
                }
            }
            4 if !pool.is_empty() => {
                let other = &pool[rng.below(pool.len())];
                let i = rng.below(len + 1);
                let j = rng.below(other.len() + 1);
                input.truncate(i);
                input.extend_from_slice(&other[j..]);
            }
            _ => {
                let t = tokens[rng.below(tokens.len())].as_bytes();
                let i = rng.below(len + 1);
                input.splice(i..i, t.iter().copied());
            }
        }
    }
    input.truncate(MAX_LEN);
}

fn finding(target: &str, input: &[u8], what: &str) -> String {
    use sha2::{Digest, Sha256};
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/fuzz-findings");
    let _ = std::fs::create_dir_all(&dir);
    let file = dir.join(format!("{target}-{:x}", Sha256::digest(input)));
    let _ = std::fs::write(&file, input);
    format!(
        "{target}: {what}; input saved to {} ({} bytes): {:?}",
        file.display(),
        input.len(),
        String::from_utf8_lossy(&input[..input.len().min(400)])
    )
}

fn main() {
    let seconds: u64 = std::env::var("CELEROOT_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let seed: u64 = std::env::var("CELEROOT_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        });
    let only = std::env::var("CELEROOT_FUZZ_TARGETS").ok();
    // Panics are findings, reported below; keep the default hook's noise out of it.
    std::panic::set_hook(Box::new(|_| {}));
    let (mut passed, mut failed) = (0, 0);
    for t in TARGETS {
        if only
            .as_deref()
            .is_some_and(|o| !o.split(',').any(|n| n == t.name))
        {
            continue;
        }
        let mut rng = Rng(seed ^ (t.name.len() as u64).wrapping_mul(0x9e37_79b9));
        let mut pool = corpus(t.name);
        let seeds = pool.len();
        assert!(seeds > 0, "{}: the corpus is empty", t.name);
        let started = Instant::now();
        let mut runs = 0u64;
        let mut error = None;
        while started.elapsed() < Duration::from_secs(seconds) {
            let mut input = pool[rng.below(pool.len())].clone();
            if runs >= seeds as u64 {
                mutate(&mut rng, &mut input, &pool, t.tokens);
            }
            let one = Instant::now();
            let r = std::panic::catch_unwind(|| (t.run)(&input));
            runs += 1;
            if let Err(p) = r {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| {
                        p.downcast_ref::<&str>()
                            .map(std::string::ToString::to_string)
                    })
                    .unwrap_or_default();
                error = Some(finding(t.name, &input, &format!("panicked: {msg}")));
                break;
            }
            if one.elapsed() > SLOW {
                error = Some(finding(
                    t.name,
                    &input,
                    &format!("took {:?}", one.elapsed()),
                ));
                break;
            }
            // Keep some mutants to go deeper (a bounded pool).
            if rng.below(16) == 0 {
                if pool.len() < 512 {
                    pool.push(input);
                } else {
                    let i = seeds + rng.below(pool.len() - seeds);
                    pool[i] = input;
                }
            }
        }
        match error {
            None => {
                passed += 1;
                println!(
                    "test fuzz::{} ... ok ({runs} inputs in {:.1} s, seed {seed})",
                    t.name,
                    started.elapsed().as_secs_f64()
                );
            }
            Some(e) => {
                failed += 1;
                println!("test fuzz::{} ... FAILED (seed {seed})\n{e}", t.name);
            }
        }
    }
    println!(
        "\ntest result: {}. {passed} passed; {failed} failed; 0 ignored; 0 measured; 0 filtered out",
        if failed == 0 { "ok" } else { "FAILED" }
    );
    if failed > 0 {
        std::process::exit(101);
    }
}
