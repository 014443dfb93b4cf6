use crate::common::{run, TestRepo};

#[test]
fn init_creates_a_valid_repository() {
    let dir = tempfile::tempdir().expect("tempdir");
    let target = dir.path().join("fleet");
    let mut cmd = crate::common::celeroot_cmd(dir.path());
    cmd.args(["init", "fleet"]);
    let (out, code) = run(cmd);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("initialised a git repository"), "{out}");
    for f in [
        "manifests/cluster.yaml",
        "schemas/manifest.json",
        "README.md",
        ".github/workflows/celeroot.yml",
        "tasks/__init__.py",
        "tasks/app.py",
        "tasks/system.py",
        "pyproject.toml",
    ] {
        assert!(target.join(f).is_file(), "{f} missing");
        assert!(out.contains(&format!("+ {f}")), "{out}");
    }
    // The worker scaffold is written byte for byte from templates/config-repo.
    let templates = crate::common::project_root().join("templates/config-repo");
    for f in [
        "tasks/__init__.py",
        "tasks/app.py",
        "tasks/system.py",
        "pyproject.toml",
    ] {
        assert_eq!(
            std::fs::read_to_string(target.join(f)).expect("read written file"),
            std::fs::read_to_string(templates.join(f)).expect("read template"),
            "{f} differs from templates/config-repo/{f}"
        );
    }
    // The branch the workflow and `watch --branch` expect, whatever git's default is.
    assert_eq!(
        std::fs::read_to_string(target.join(".git/HEAD")).expect("read HEAD"),
        "ref: refs/heads/main\n"
    );
    // The workflow installs this very version, keeps its own comment (by the marker the
    // Markdown plan starts with), comments only when the token may, and shows install errors.
    let workflow = std::fs::read_to_string(target.join(".github/workflows/celeroot.yml"))
        .expect("read workflow");
    let version = env!("CARGO_PKG_VERSION");
    assert!(
        workflow.contains(&format!("CELEROOT_VERSION: \"{version}\"")),
        "{workflow}"
    );
    assert!(workflow.contains("--locked"), "{workflow}");
    assert!(
        workflow.contains("--tag \"v$CELEROOT_VERSION\""),
        "{workflow}"
    );
    assert!(workflow.contains("startswith(\"<!-- celeroot-plan -->\")"));
    assert!(workflow.contains("github.event.pull_request.head.repo.full_name == github.repository"));
    assert!(!workflow.contains("2>/dev/null"), "{workflow}");
    assert!(!workflow.contains("pull_request_target:"), "{workflow}");
    let mut validate = crate::common::celeroot_cmd(&target);
    validate.args(["validate", "--worktree"]);
    let (out, code) = run(validate);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn init_never_overwrites() {
    let repo = TestRepo::empty();
    repo.write("manifests/cluster.yaml", "# mine\n");
    repo.write("README.md", "my readme\n");
    repo.write("tasks/app.py", "# my app\n");
    repo.write("pyproject.toml", "# my project\n");
    let mut cmd = repo.cmd();
    cmd.args(["init"]);
    let (out, code) = run(cmd);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("= manifests/cluster.yaml (exists, kept)"),
        "{out}"
    );
    assert!(
        !out.contains("initialised a git repository"),
        "already a repository: {out}"
    );
    assert_eq!(repo.read("manifests/cluster.yaml"), "# mine\n");
    assert_eq!(repo.read("README.md"), "my readme\n");
    assert!(out.contains("= tasks/app.py (exists, kept)"), "{out}");
    assert!(out.contains("= pyproject.toml (exists, kept)"), "{out}");
    assert!(out.contains("+ tasks/system.py"), "{out}");
    assert_eq!(repo.read("tasks/app.py"), "# my app\n");
    assert_eq!(repo.read("pyproject.toml"), "# my project\n");
    let mut again = repo.cmd();
    again.args(["init"]);
    let (out, _) = run(again);
    assert!(
        !out.contains("\n+ "),
        "a second init creates nothing: {out}"
    );
}

#[test]
fn the_embedded_example_is_exactly_manifests_dir() {
    let root = crate::common::project_root();
    let mut on_disk = Vec::new();
    let mut stack = vec![root.join("manifests")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read dir") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p
                    .strip_prefix(&root)
                    .expect("prefix")
                    .to_string_lossy()
                    .into_owned();
                on_disk.push((rel, std::fs::read_to_string(&p).expect("read")));
            }
        }
    }
    on_disk.sort();
    let mut embedded: Vec<(String, String)> = celeroot::init::EXAMPLE_MANIFESTS
        .iter()
        .map(|(p, t)| (p.to_string(), t.to_string()))
        .collect();
    embedded.sort();
    assert_eq!(embedded, on_disk, "update EXAMPLE_MANIFESTS in src/init.rs");
}

#[test]
fn the_embedded_worker_scaffold_is_exactly_the_template() {
    let root = crate::common::project_root().join("templates/config-repo");
    let mut on_disk = vec![(
        "pyproject.toml".to_string(),
        std::fs::read_to_string(root.join("pyproject.toml")).expect("read"),
    )];
    for e in std::fs::read_dir(root.join("tasks")).expect("read tasks/") {
        let p = e.expect("entry").path();
        // Skip bytecode caches a local Python run may leave behind.
        if p.is_file() && p.extension().is_some_and(|x| x == "py") {
            let name = p.file_name().expect("name").to_string_lossy();
            on_disk.push((
                format!("tasks/{name}"),
                std::fs::read_to_string(&p).expect("read"),
            ));
        }
    }
    on_disk.sort();
    let mut embedded: Vec<(String, String)> = celeroot::init::WORKER_SCAFFOLD
        .iter()
        .map(|(p, t)| (p.to_string(), t.to_string()))
        .collect();
    embedded.sort();
    assert_eq!(embedded, on_disk, "update WORKER_SCAFFOLD in src/init.rs");
}

#[test]
fn init_into_a_file_is_an_error() {
    let repo = TestRepo::empty();
    repo.write("occupied", "not a directory\n");
    let mut cmd = repo.cmd();
    cmd.args(["init", "occupied"]);
    let (out, code) = run(cmd);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("error: "), "{out}");
}

/// The pre-commit hook runs exactly the command `.pre-commit-hooks.yaml` names, without
/// file names, in the config repository: it passes on a valid tree and fails, with the
/// located error, on an invalid one.
#[test]
fn the_pre_commit_hook_validates_the_working_tree() {
    let hooks =
        std::fs::read_to_string(crate::common::project_root().join(".pre-commit-hooks.yaml"))
            .expect("read .pre-commit-hooks.yaml");
    let hooks: Vec<serde_json::Value> = serde_saphyr::from_str(&hooks).expect("parse hooks");
    let hook = hooks
        .iter()
        .find(|h| h["id"] == "celeroot-validate")
        .expect("a celeroot-validate hook");
    assert_eq!(hook["pass_filenames"], false);
    let entry = hook["entry"].as_str().expect("entry");
    let argv: Vec<&str> = entry.split_whitespace().collect();
    assert_eq!(argv[0], "celeroot");
    let repo = TestRepo::with_example();
    let mut ok = repo.cmd();
    ok.args(&argv[1..]);
    let (out, code) = run(ok);
    assert_eq!(code, 0, "{out}");
    // Not committed: the hook sees the working tree.
    repo.write(
        "manifests/cluster.yaml",
        "apiVersion: celeroot.io/v1\nkind: Cluster\n",
    );
    let mut bad = repo.cmd();
    bad.args(&argv[1..]);
    let (out, code) = run(bad);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("manifests/cluster.yaml:"), "{out}");
}
