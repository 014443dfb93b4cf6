use crate::common::{project_root, run, TestRepo};

#[test]
fn committed_schemas_are_up_to_date() {
    let dir = project_root().join("schemas");
    let mut stale = Vec::new();
    let output = celeroot::contract::output_schema_files();
    let files = celeroot::manifest::schema::all_schemas().into_iter().chain(
        output
            .iter()
            .map(|(n, t)| (format!("output/{n}"), t.clone())),
    );
    for (name, text) in files {
        let on_disk = std::fs::read_to_string(dir.join(&name)).unwrap_or_default();
        if on_disk != text {
            stale.push(name);
        }
    }
    assert!(
        stale.is_empty(),
        "stale schemas {stale:?}: run `cargo run -- schema --write schemas`"
    );
    let files = std::fs::read_dir(&dir)
        .expect("schemas dir")
        .filter(|e| e.as_ref().is_ok_and(|e| e.path().is_file()))
        .count();
    assert_eq!(
        files,
        celeroot::manifest::schema::all_schemas().len(),
        "schemas/ holds unexpected files"
    );
    let outputs = std::fs::read_dir(dir.join("output"))
        .expect("schemas/output")
        .count();
    assert_eq!(
        outputs,
        output.len(),
        "schemas/output/ holds unexpected files"
    );
}

fn yaml_to_json(text: &str) -> Vec<serde_json::Value> {
    use celeroot::manifest::{Node, Value};
    fn conv(n: &Node) -> serde_json::Value {
        match &n.value {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => (*b).into(),
            Value::Int(i) => (*i).into(),
            Value::UInt(u) => (*u).into(),
            Value::Float(f) => serde_json::json!(f),
            Value::Str(s) => s.clone().into(),
            Value::Seq(items) => items.iter().map(conv).collect(),
            Value::Map(entries) => entries
                .iter()
                .map(|(k, v)| (k.as_str().unwrap_or_default().to_string(), conv(v)))
                .collect::<serde_json::Map<_, _>>()
                .into(),
        }
    }
    celeroot::manifest::yaml::parse_documents(text)
        .into_iter()
        .map(|d| conv(&d.expect("valid YAML").root))
        .collect()
}

fn schema(name: &str) -> jsonschema::Validator {
    let text =
        std::fs::read_to_string(project_root().join("schemas").join(name)).expect("schema file");
    let v: serde_json::Value = serde_json::from_str(&text).expect("schema JSON");
    jsonschema::validator_for(&v).expect("schema compiles")
}

#[test]
fn example_manifests_validate_against_the_generated_schemas() {
    let any = schema("manifest.json");
    for (path, text) in celeroot::init::EXAMPLE_MANIFESTS {
        for doc in yaml_to_json(text) {
            let kind = doc["kind"].as_str().expect("kind").to_lowercase();
            let errors: Vec<String> = any.iter_errors(&doc).map(|e| e.to_string()).collect();
            assert!(
                errors.is_empty(),
                "{path} against manifest.json: {errors:?}"
            );
            let per_kind = schema(&format!("{kind}.json"));
            let errors: Vec<String> = per_kind.iter_errors(&doc).map(|e| e.to_string()).collect();
            assert!(errors.is_empty(), "{path} against {kind}.json: {errors:?}");
        }
    }
}

#[test]
fn schemas_reject_what_celeroot_rejects_structurally() {
    let any = schema("manifest.json");
    for (label, text) in [
        ("unknown field", "apiVersion: celeroot.io/v1\nkind: Host\nmetadata: {name: a}\nspec: {adress: x, roles: [r]}\n"),
        ("unknown kind", "apiVersion: celeroot.io/v1\nkind: Hots\nmetadata: {name: a}\nspec: {}\n"),
        ("two keys in a target", "apiVersion: celeroot.io/v1\nkind: Schedule\nmetadata: {name: a}\nspec: {every: 5m, task: t, targets: [{role: r, host: h}]}\n"),
        ("wrong mode", "apiVersion: celeroot.io/v1\nkind: Schedule\nmetadata: {name: a}\nspec: {every: 5m, task: t, mode: all, targets: [{role: r}]}\n"),
    ] {
        for doc in yaml_to_json(text) {
            assert!(!any.is_valid(&doc), "{label} should be rejected by the schema");
        }
    }
}

#[test]
fn schema_command_prints_one_kind_or_all() {
    let repo = TestRepo::empty();
    let mut cmd = repo.cmd();
    cmd.args(["schema", "host"]);
    let (out, code) = run(cmd);
    assert_eq!(code, 0);
    let json = out.split("[exit status").next().unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(json).expect("JSON");
    assert_eq!(v["properties"]["kind"]["const"], "Host");
    let mut bad = repo.cmd();
    bad.args(["schema", "widget"]);
    let (out, code) = run(bad);
    assert_eq!(code, 1);
    assert!(out.contains("unknown kind `widget`"), "{out}");
}
