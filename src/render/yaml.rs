//! A small, deterministic YAML emitter for normalised specs (block style, 2-space indent).

use serde_json::Value as Json;

/// Renders a JSON value as block YAML. Keys keep their order; strings are quoted only
/// when plain YAML would read them as something else.
pub fn to_yaml(v: &Json) -> String {
    let mut out = String::new();
    match v {
        Json::Object(m) if !m.is_empty() => emit_map(m, 0, &mut out),
        Json::Array(a) if !a.is_empty() => emit_seq(a, 0, &mut out),
        other => {
            out.push_str(&scalar(other));
            out.push('\n');
        }
    }
    out
}

fn emit_map(m: &serde_json::Map<String, Json>, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    for (k, v) in m {
        out.push_str(&pad);
        out.push_str(&quote(k));
        out.push(':');
        emit_value_after_key(v, indent, out);
    }
}

fn emit_value_after_key(v: &Json, indent: usize, out: &mut String) {
    match v {
        Json::Object(m) if !m.is_empty() => {
            out.push('\n');
            emit_map(m, indent + 2, out);
        }
        Json::Array(a) if !a.is_empty() => {
            out.push('\n');
            emit_seq(a, indent + 2, out);
        }
        other => {
            out.push(' ');
            out.push_str(&scalar(other));
            out.push('\n');
        }
    }
}

fn emit_seq(a: &[Json], indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    for v in a {
        out.push_str(&pad);
        out.push('-');
        match v {
            Json::Object(m) if !m.is_empty() => {
                // First key on the dash line, the rest aligned under it.
                let mut first = true;
                for (k, val) in m {
                    if first {
                        out.push(' ');
                        first = false;
                    } else {
                        out.push_str(&pad);
                        out.push_str("  ");
                    }
                    out.push_str(&quote(k));
                    out.push(':');
                    emit_value_after_key(val, indent + 2, out);
                }
            }
            Json::Array(inner) if !inner.is_empty() => {
                out.push('\n');
                emit_seq(inner, indent + 2, out);
            }
            other => {
                out.push(' ');
                out.push_str(&scalar(other));
                out.push('\n');
            }
        }
    }
}

fn scalar(v: &Json) -> String {
    match v {
        Json::Null => "null".into(),
        Json::Bool(b) => b.to_string(),
        Json::Number(n) => n.to_string(),
        Json::String(s) => quote(s),
        Json::Array(_) => "[]".into(),
        Json::Object(_) => "{}".into(),
    }
}

fn quote(s: &str) -> String {
    if needs_quotes(s) {
        serde_json::to_string(s).unwrap_or_else(|_| format!("{s:?}"))
    } else {
        s.to_string()
    }
}

fn needs_quotes(s: &str) -> bool {
    if s.is_empty() || s.trim() != s {
        return true;
    }
    let lower = s.to_ascii_lowercase();
    if matches!(
        lower.as_str(),
        "null"
            | "~"
            | "true"
            | "false"
            | "yes"
            | "no"
            | "on"
            | "off"
            | "y"
            | "n"
            | ".nan"
            | ".inf"
            | "-.inf"
    ) {
        return true;
    }
    if s.parse::<f64>().is_ok()
        || s.starts_with(|c: char| c.is_ascii_digit())
            && s.chars()
                .all(|c| c.is_ascii_digit() || c == '_' || c == '.' || c == ':')
    {
        return true;
    }
    if let Some(rest) = s.strip_prefix('-') {
        // `--quiet` stays plain; `- x` would be a list item and `-1` a number.
        return rest.is_empty() || rest.starts_with(' ') || s.contains(": ") || s.contains(" #");
    }
    if s.starts_with([
        '?', ':', ',', '[', ']', '{', '}', '#', '&', '*', '!', '|', '>', '\'', '"', '%', '@', '`',
    ]) {
        return true;
    }
    s.contains(": ") || s.contains(" #") || s.ends_with(':') || s.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn emits_block_yaml() {
        let v = json!({"spec": {"address": "192.0.2.11", "roles": ["db", "web"], "targets": [{"role": "web"}, {"selector": {"matchLabels": {"env": "prod"}}}], "cron": "*/5 * * * *", "enabled": true, "args": ["yes", 1, null], "kwargs": {}}});
        let expected = "spec:
  address: \"192.0.2.11\"
  roles:
    - db
    - web
  targets:
    - role: web
    - selector:
        matchLabels:
          env: prod
  cron: \"*/5 * * * *\"
  enabled: true
  args:
    - \"yes\"
    - 1
    - null
  kwargs: {}
";
        assert_eq!(to_yaml(&v), expected);
    }

    #[test]
    fn plain_strings_stay_plain() {
        assert!(!needs_quotes("webserver"));
        assert!(!needs_quotes("Europe/Berlin"));
        assert!(!needs_quotes("--quiet"));
        assert!(needs_quotes("- x"));
        assert!(needs_quotes("a: b"));
        assert!(needs_quotes("22"));
    }
}
