//! Writing JSON values as block-style YAML, the way the bundled manifests are written:
//! two-space indentation, plain scalars where YAML reads them back as the same value,
//! short lists of scalars in flow style (`roles: [webserver, application]`).
//!
//! Every text this module produces is parsed back by the caller and compared with the
//! value it was made from, so a quoting mistake here is an error, never a silent change.

use serde_json::{Map, Value as Json};

/// Longest flow list (`[a, b]`) written on one line; longer lists become block lists.
const FLOW_WIDTH: usize = 72;

/// The `apiVersion/kind/metadata/spec` document of an object, ending with a newline.
pub fn document(value: &Json) -> String {
    let mut out = String::new();
    match value {
        Json::Object(map) => mapping(map, 0, &mut out),
        other => {
            out.push_str(&inline(other).unwrap_or_else(|| "null".into()));
            out.push('\n');
        }
    }
    out
}

/// A scalar or short collection on one line, or `None` when it needs a block.
pub fn inline(value: &Json) -> Option<String> {
    match value {
        Json::Null => Some("null".into()),
        Json::Bool(b) => Some(b.to_string()),
        Json::Number(n) => Some(n.to_string()),
        Json::String(s) => Some(string(s)),
        Json::Array(items) if items.is_empty() => Some("[]".into()),
        Json::Object(map) if map.is_empty() => Some("{}".into()),
        Json::Array(items) => {
            let parts: Option<Vec<String>> = items
                .iter()
                .map(|i| match i {
                    Json::Array(_) | Json::Object(_) => None,
                    scalar => inline(scalar),
                })
                .collect();
            let text = format!("[{}]", parts?.join(", "));
            (text.len() <= FLOW_WIDTH).then_some(text)
        }
        Json::Object(_) => None,
    }
}

/// The lines of a mapping's entries at `indent`, each ending with a newline.
pub fn mapping(map: &Map<String, Json>, indent: usize, out: &mut String) {
    for (k, v) in map {
        entry(k, v, indent, out);
    }
}

/// One `key: value` entry at `indent`, with nested lines when the value needs a block.
pub fn entry(key: &str, value: &Json, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    let key = string(key);
    match block_inline(value) {
        Some(text) => out.push_str(&format!("{pad}{key}: {text}\n")),
        None => {
            out.push_str(&format!("{pad}{key}:\n"));
            block(value, indent + 2, out);
        }
    }
}

/// The lines of a block collection whose entries start at `indent`.
pub fn block(value: &Json, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match value {
        Json::Object(map) => mapping(map, indent, out),
        Json::Array(items) => {
            for item in items {
                match item {
                    Json::Object(map) if !map.is_empty() => {
                        // `- key: value` then the other keys aligned under the first.
                        let mut nested = String::new();
                        mapping(map, indent + 2, &mut nested);
                        let body = nested.get(indent + 2..).unwrap_or_default();
                        out.push_str(&format!("{pad}- {body}"));
                    }
                    Json::Array(inner) if inline(item).is_none() => {
                        out.push_str(&format!("{pad}-\n"));
                        block(&Json::Array(inner.clone()), indent + 2, out);
                    }
                    scalar => {
                        let text = block_inline(scalar).unwrap_or_else(|| "null".into());
                        out.push_str(&format!("{pad}- {text}\n"));
                    }
                }
            }
        }
        scalar => {
            let text = inline(scalar).unwrap_or_else(|| "null".into());
            out.push_str(&format!("{pad}{text}\n"));
        }
    }
}

/// [`inline`], but a string may use the wider plain style of block context (commas,
/// brackets and quotes inside the text), as a hand-written `description:` does.
pub fn block_inline(value: &Json) -> Option<String> {
    match value {
        Json::String(s) if is_block_plain_safe(s) => Some(s.clone()),
        other => inline(other),
    }
}

fn is_block_plain_safe(s: &str) -> bool {
    let Some(first) = s.chars().next() else {
        return false;
    };
    let first_ok = first.is_ascii_alphanumeric()
        || "/_(".contains(first)
        || (first == '~' && s.len() > 1)
        || (first == '-' && s.len() > 1 && !s[1..].starts_with(' '));
    first_ok
        && s.chars()
            .all(|c| !c.is_control() && !"\t*&!|>%@`{}[]".contains(c))
        && !s.ends_with(' ')
        && !s.ends_with(':')
        && !s.contains(": ")
        && !s.contains(" #")
        && !RESERVED.contains(&s.to_ascii_lowercase().as_str())
        && !looks_numeric(s)
}

/// A string as a YAML scalar: plain when YAML reads it back as the same string,
/// double-quoted (JSON escapes are valid YAML escapes) otherwise.
pub fn string(s: &str) -> String {
    if is_plain_safe(s) {
        s.to_string()
    } else {
        serde_json::to_string(s).unwrap_or_else(|_| format!("{s:?}"))
    }
}

/// Words YAML 1.1 or 1.2 reads as something other than a string.
const RESERVED: &[&str] = &[
    "null", "~", "true", "false", "yes", "no", "on", "off", "y", "n", ".inf", ".nan", "inf", "nan",
    "infinity",
];

fn is_plain_safe(s: &str) -> bool {
    let Some(first) = s.chars().next() else {
        return false;
    };
    let chars_ok = s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || " ._/@+-=:".contains(c));
    let first_ok = first.is_ascii_alphanumeric()
        || "/_".contains(first)
        || first == '-' && s.len() > 1 && !s[1..].starts_with(' ');
    chars_ok
        && first_ok
        && !s.ends_with(' ')
        && !s.ends_with(':')
        && !s.contains(": ")
        && !RESERVED.contains(&s.to_ascii_lowercase().as_str())
        && !looks_numeric(s)
}

/// Anything a YAML 1.1 or 1.2 reader might take for a number (`1`, `1.5`, `1e3`,
/// `0x1f`, `1_000`, `12:30`): quoted, to be safe.
fn looks_numeric(s: &str) -> bool {
    let t = s.trim_start_matches(['-', '+']);
    if t.parse::<f64>().is_ok() {
        return true;
    }
    let lower = t.to_ascii_lowercase();
    let radix = ["0x", "0o", "0b"].iter().any(|p| lower.starts_with(p))
        && t.len() > 2
        && t[2..].chars().all(|c| c.is_ascii_hexdigit() || c == '_');
    let digits = t.chars().any(|c| c.is_ascii_digit());
    let underscored = digits
        && t.chars()
            .all(|c| c.is_ascii_digit() || c == '_' || c == '.')
        && t.matches('.').count() <= 1;
    let sexagesimal = digits
        && t.split(':').count() > 1
        && t.split(':')
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit() || c == '.'));
    radix || underscored || sexagesimal
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::yaml::parse_documents;
    use serde_json::json;

    fn round_trip(v: &Json) -> Json {
        let text = document(v);
        let docs = parse_documents(&text);
        match docs.first() {
            Some(Ok(doc)) => crate::manifest::node_to_json(&doc.root),
            other => panic!("{text}\n{other:?}"),
        }
    }

    #[test]
    fn writes_documents_like_the_bundled_manifests() {
        let v = json!({
            "apiVersion": "celeroot.io/v1",
            "kind": "Host",
            "metadata": {"name": "web03", "labels": {"env": "production"}},
            "spec": {"address": "192.0.2.12", "roles": ["webserver", "application"],
                     "ssh": {"user": "deploy", "port": 2222}}
        });
        assert_eq!(
            document(&v),
            "apiVersion: celeroot.io/v1\nkind: Host\nmetadata:\n  name: web03\n  labels:\n    env: production\nspec:\n  address: 192.0.2.12\n  roles: [webserver, application]\n  ssh:\n    user: deploy\n    port: 2222\n"
        );
        assert_eq!(round_trip(&v), v);
    }

    #[test]
    fn quotes_what_yaml_would_read_as_something_else() {
        for s in [
            "yes",
            "No",
            "on",
            "null",
            "~",
            "1",
            "1.5",
            "010",
            "1e3",
            "0x1f",
            "12:30",
            "",
            " lead",
            "trail ",
            "*/5 * * * *",
            "a: b",
            "#x",
            "- x",
            "-",
            "[x]",
            "{x}",
            "a,b",
            "it's",
            "\"q\"",
            "é",
            "line\nbreak",
            "tab\t",
            "true",
            ".inf",
            "-1",
            "+1",
            "1_000",
        ] {
            let v = json!({ "k": s, "list": [s] });
            assert_eq!(round_trip(&v), v, "{s:?} -> {}", document(&v));
        }
        assert_eq!(string("192.0.2.11"), "192.0.2.11");
        assert_eq!(string("--quiet"), "--quiet");
        assert_eq!(string("*/5 * * * *"), "\"*/5 * * * *\"");
    }

    #[test]
    fn long_lists_and_lists_of_mappings_are_blocks() {
        let long: Vec<String> = (0..30).map(|i| format!("module{i}.tasks")).collect();
        let v = json!({
            "tasks": long,
            "targets": [{"role": "web"}, {"selector": {"matchLabels": {"env": "prod", "zone": "a"}}}],
            "args": [[1, 2], {"a": [1]}],
            "empty": {}, "none": [], "n": null, "b": false, "f": 1.5
        });
        let text = document(&v);
        assert!(
            text.contains(
                "targets:\n  - role: web\n  - selector:\n      matchLabels:\n        env: prod\n"
            ),
            "{text}"
        );
        assert_eq!(round_trip(&v), v, "{text}");
    }
}
