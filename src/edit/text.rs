//! Editing one YAML document in place: the smallest text change that turns the
//! document's value into a new value, leaving every untouched line (comments, key order,
//! quoting, blank lines) byte for byte as it was.
//!
//! The document is edited line by line, as block-style YAML: mappings are walked by
//! indentation down to the keys whose values differ; each such value is replaced (a
//! trailing comment on its key line is kept), removed, or inserted after the last entry
//! of its mapping. Lists are replaced whole. The result is parsed again and compared
//! with the new value; when they differ (a layout this editor does not understand, such
//! as a flow mapping spanning lines), [`edit_document`] fails instead of guessing.

use serde_json::Value as Json;

use super::emit;
use crate::manifest::yaml::parse_documents;

/// Why a document could not be edited in place.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct LayoutError(pub String);

pub use crate::manifest::node_to_json;

/// Rewrites `doc` (the text of one YAML document whose value is `old`) so that its value
/// becomes `new`, changing only the lines of the values that differ.
///
/// # Errors
/// When the edited text does not read back as `new`.
pub fn edit_document(doc: &str, old: &Json, new: &Json) -> Result<String, LayoutError> {
    let mut edits = Vec::new();
    diff(old, new, &mut Vec::new(), &mut edits);
    let mut lines: Vec<String> = doc.lines().map(str::to_string).collect();
    for edit in &edits {
        match edit {
            Edit::Set(path) => set(&mut lines, path, new)?,
            Edit::Remove(path) => remove(&mut lines, path)?,
        }
    }
    let eol = if doc.contains("\r\n") { "\r\n" } else { "\n" };
    let mut text = lines.join(eol);
    if doc.ends_with('\n') || doc.is_empty() {
        text.push_str(eol);
    }
    match parse_documents(&text).as_slice() {
        [Ok(parsed)] if node_to_json(&parsed.root) == *new => Ok(text),
        _ => Err(LayoutError(
            "the document's layout could not be edited in place".into(),
        )),
    }
}

#[derive(Debug)]
enum Edit {
    /// Give the key at this path its value in the new document (insert it if missing).
    Set(Vec<String>),
    Remove(Vec<String>),
}

/// The keys whose values differ, as deep as both sides are non-empty mappings.
fn diff(old: &Json, new: &Json, path: &mut Vec<String>, out: &mut Vec<Edit>) {
    match (old, new) {
        (Json::Object(a), Json::Object(b)) if !b.is_empty() && !a.is_empty() => {
            for (k, va) in a {
                if !b.contains_key(k) {
                    path.push(k.clone());
                    out.push(Edit::Remove(path.clone()));
                    path.pop();
                }
                let _ = va;
            }
            for (k, vb) in b {
                path.push(k.clone());
                match a.get(k) {
                    Some(va) => diff(va, vb, path, out),
                    None => out.push(Edit::Set(path.clone())),
                }
                path.pop();
            }
        }
        _ if old == new => {}
        _ => out.push(Edit::Set(path.clone())),
    }
}

fn lookup<'a>(v: &'a Json, path: &[String]) -> Option<&'a Json> {
    path.iter().try_fold(v, |v, k| v.get(k))
}

fn indent_of(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

fn is_content(line: &str) -> bool {
    let t = line.trim();
    !(t.is_empty() || t.starts_with('#') || t == "---" || t.starts_with("--- ") || t == "...")
}

/// A `key: value` line of a block mapping.
struct KeyLine {
    /// Index of the key line.
    line: usize,
    indent: usize,
    /// The key as written, up to and including the `:`.
    head: String,
    /// The value text on the key line (no comment), trimmed.
    value: String,
    /// A trailing comment with the spaces before it (`  # why`), or empty.
    comment: String,
    /// One past the last line of the value (trailing blank and comment lines excluded).
    end: usize,
}

/// Splits `rest` (what follows `key:`) into value and trailing comment.
fn split_comment(rest: &str) -> (String, String) {
    let mut quote: Option<char> = None;
    let bytes: Vec<char> = rest.chars().collect();
    let mut byte = 0usize;
    for (i, c) in bytes.iter().enumerate() {
        match (quote, *c) {
            (None, '"' | '\'') => quote = Some(*c),
            (Some(q), c2) if c2 == q => quote = None,
            (None, '#') if i == 0 || bytes[i - 1] == ' ' || bytes[i - 1] == '\t' => {
                let value = rest[..byte].trim_end();
                let comment = &rest[value.len()..];
                return (value.trim().to_string(), comment.to_string());
            }
            _ => {}
        }
        byte += c.len_utf8();
    }
    (rest.trim().to_string(), String::new())
}

/// The key written at the start of `body` (a line without its indentation) and the
/// byte length of `key:`.
fn parse_key(body: &str) -> Option<(String, usize)> {
    if body.starts_with('"') || body.starts_with('\'') {
        let q = body.chars().next()?;
        let close = body[1..].find(q)? + 1;
        let raw = &body[..=close];
        let after = &body[close + 1..];
        let after_trim = after.trim_start();
        if !after_trim.starts_with(':') {
            return None;
        }
        let key = if q == '"' {
            serde_json::from_str::<String>(raw).ok()?
        } else {
            raw[1..raw.len() - 1].replace("''", "'")
        };
        let colon = close + 1 + (after.len() - after_trim.len()) + 1;
        return Some((key, colon));
    }
    let mut search = 0usize;
    while let Some(i) = body[search..].find(':') {
        let at = search + i;
        let next = body[at + 1..].chars().next();
        if next.is_none() || next == Some(' ') || next == Some('\t') {
            return Some((body[..at].trim_end().to_string(), at + 1));
        }
        search = at + 1;
    }
    None
}

/// Finds `key` among the entries of the block mapping in `lines[from..to]`.
fn find_key(
    lines: &[String],
    from: usize,
    to: usize,
    key: &str,
) -> Result<Option<KeyLine>, LayoutError> {
    let Some(first) = (from..to).find(|&i| is_content(&lines[i])) else {
        return Ok(None);
    };
    let indent = indent_of(&lines[first]);
    for i in first..to {
        let line = &lines[i];
        if !is_content(line) || indent_of(line) != indent {
            continue;
        }
        let body = &line[indent..];
        if body.starts_with("- ") || body == "-" {
            if i == first {
                return Err(LayoutError("expected a mapping, found a list".into()));
            }
            // An item of the previous key's indentless list (`key:` then `- item`).
            continue;
        }
        let Some((k, colon)) = parse_key(body) else {
            continue;
        };
        if k != key {
            continue;
        }
        let (value, comment) = split_comment(&body[colon..]);
        let mut end = i + 1;
        let mut last = i + 1;
        while end < to {
            let l = &lines[end];
            if is_content(l) {
                let ind = indent_of(l);
                let item = l[ind..].starts_with("- ") || l.trim() == "-";
                if ind > indent || (ind == indent && item && value.is_empty()) {
                    last = end + 1;
                } else {
                    break;
                }
            }
            end += 1;
        }
        return Ok(Some(KeyLine {
            line: i,
            indent,
            head: line[..indent + colon].to_string(),
            value,
            comment,
            end: last,
        }));
    }
    Ok(None)
}

/// Lines `(from, to, indent)` of the mapping at `path` (the whole document for `[]`).
fn mapping_range(
    lines: &[String],
    path: &[String],
) -> Result<Option<(usize, usize, usize)>, LayoutError> {
    let mut range = (0, lines.len(), 0);
    for key in path {
        let Some(kl) = find_key(lines, range.0, range.1, key)? else {
            return Ok(None);
        };
        if !kl.value.is_empty() {
            return Ok(None);
        }
        range = (kl.line + 1, kl.end, kl.indent + 2);
    }
    Ok(Some(range))
}

fn value_lines(head: &str, indent: usize, value: &Json, comment: &str) -> Vec<String> {
    match emit::block_inline(value) {
        Some(text) => vec![format!("{head} {text}{comment}")],
        None => {
            let mut out = String::new();
            emit::block(value, indent + 2, &mut out);
            let mut lines = vec![format!("{head}{comment}")];
            lines.extend(out.lines().map(str::to_string));
            lines
        }
    }
}

fn set(lines: &mut Vec<String>, path: &[String], new: &Json) -> Result<(), LayoutError> {
    // Walk down as far as the existing block mappings go.
    let mut range = (0usize, lines.len(), 0usize);
    for depth in 0..path.len() {
        let key = &path[depth];
        let prefix = &path[..=depth];
        let value =
            lookup(new, prefix).ok_or_else(|| LayoutError("internal: no new value".into()))?;
        match find_key(lines, range.0, range.1, key)? {
            Some(kl) if depth + 1 < path.len() && kl.value.is_empty() && kl.end > kl.line + 1 => {
                range = (kl.line + 1, kl.end, kl.indent + 2);
            }
            Some(kl) => {
                // The value at this depth is replaced whole (a scalar, a list, a flow
                // mapping, or the key itself).
                let new_lines = value_lines(&kl.head, kl.indent, value, &kl.comment);
                lines.splice(kl.line..kl.end, new_lines);
                return Ok(());
            }
            None => {
                let indent = (range.0..range.1)
                    .find(|&i| is_content(&lines[i]))
                    .map_or(range.2, |i| indent_of(&lines[i]));
                let at = (range.0..range.1)
                    .rev()
                    .find(|&i| is_content(&lines[i]))
                    .map_or(range.0, |i| i + 1);
                let mut out = String::new();
                emit::entry(key, value, indent, &mut out);
                let new_lines: Vec<String> = out.lines().map(str::to_string).collect();
                lines.splice(at..at, new_lines);
                return Ok(());
            }
        }
    }
    Err(LayoutError("internal: empty path".into()))
}

fn remove(lines: &mut Vec<String>, path: &[String]) -> Result<(), LayoutError> {
    let Some((last, parent)) = path.split_last() else {
        return Err(LayoutError("internal: empty path".into()));
    };
    let Some((from, to, _)) = mapping_range(lines, parent)? else {
        return Err(LayoutError(
            "the document's layout could not be edited in place".into(),
        ));
    };
    if let Some(kl) = find_key(lines, from, to, last)? {
        lines.drain(kl.line..kl.end);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn edit(doc: &str, change: impl FnOnce(&mut Json)) -> String {
        let parsed = parse_documents(doc);
        let Some(Ok(d)) = parsed.first() else {
            panic!("bad fixture")
        };
        let old = node_to_json(&d.root);
        let mut new = old.clone();
        change(&mut new);
        match edit_document(doc, &old, &new) {
            Ok(text) => text,
            Err(e) => panic!("{e}"),
        }
    }

    const HOST: &str = "# yaml-language-server: $schema=../../schemas/manifest.json
apiVersion: celeroot.io/v1
kind: Host
metadata:
  name: web01 # the first one
  labels:
    env: production   # keep me
    zone: fra1-a

spec:
  # where it is
  address: 192.0.2.11  # public
  roles: [webserver, application]
";

    #[test]
    fn a_scalar_change_touches_one_line_and_keeps_its_comment() {
        let out = edit(HOST, |v| v["spec"]["address"] = json!("192.0.2.99"));
        assert_eq!(
            out,
            HOST.replace("192.0.2.11  # public", "192.0.2.99  # public")
        );
    }

    #[test]
    fn new_keys_go_after_the_last_entry_of_their_mapping() {
        let out = edit(HOST, |v| {
            v["metadata"]["labels"]["tier"] = json!("frontend");
            v["spec"]["ssh"] = json!({"user": "deploy", "port": 2222});
        });
        let expected = HOST
            .replace("zone: fra1-a\n", "zone: fra1-a\n    tier: frontend\n")
            .replace(
                "roles: [webserver, application]\n",
                "roles: [webserver, application]\n  ssh:\n    user: deploy\n    port: 2222\n",
            );
        assert_eq!(out, expected);
    }

    #[test]
    fn removing_a_key_removes_its_block_only() {
        let out = edit(HOST, |v| {
            v["metadata"]["labels"]
                .as_object_mut()
                .map(|m| m.remove("env"));
        });
        assert_eq!(out, HOST.replace("    env: production   # keep me\n", ""));
        let out = edit(HOST, |v| {
            v["metadata"].as_object_mut().map(|m| m.remove("labels"));
        });
        assert_eq!(
            out,
            HOST.replace(
                "  labels:\n    env: production   # keep me\n    zone: fra1-a\n",
                ""
            )
        );
    }

    #[test]
    fn lists_are_replaced_whole_in_the_style_that_fits() {
        let out = edit(HOST, |v| v["spec"]["roles"] = json!(["webserver"]));
        assert_eq!(out, HOST.replace("[webserver, application]", "[webserver]"));
        let doc = "spec:\n  tasks:\n    - a.tasks  # first\n    - b.tasks\n  queue: q\n";
        let out = edit(doc, |v| v["spec"]["tasks"] = json!(["a.tasks", "c.tasks"]));
        assert_eq!(out, "spec:\n  tasks: [a.tasks, c.tasks]\n  queue: q\n");
        let doc = "spec:\n  tasks:\n  - a\n  - b\n  queue: q\n";
        let out = edit(doc, |v| v["spec"]["queue"] = json!("r"));
        assert_eq!(out, "spec:\n  tasks:\n  - a\n  - b\n  queue: r\n");
    }

    #[test]
    fn emptied_mappings_become_flow_and_quoted_keys_are_found() {
        let doc = "metadata:\n  labels:\n    \"a/b\": x\n";
        let out = edit(doc, |v| v["metadata"]["labels"]["a/b"] = json!("z"));
        assert_eq!(out, "metadata:\n  labels:\n    \"a/b\": z\n");
        let out = edit(doc, |v| v["metadata"]["labels"] = json!({}));
        assert_eq!(out, "metadata:\n  labels: {}\n");
        let doc = "a: {x: 1}\n";
        let out = edit(doc, |v| v["a"]["w"] = json!(2));
        assert_eq!(out, "a:\n  x: 1\n  w: 2\n");
    }

    /// Every scalar of every bundled manifest, changed one at a time: exactly its own line
    /// changes, and every other line (comments included) stays as it was.
    #[test]
    fn each_scalar_of_the_bundled_manifests_edits_exactly_one_line() {
        fn leaves(v: &Json, path: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
            match v {
                Json::Object(m) => {
                    for (k, v) in m {
                        path.push(k.clone());
                        leaves(v, path, out);
                        path.pop();
                    }
                }
                Json::Array(_) => out.push(path.clone()),
                _ => out.push(path.clone()),
            }
        }
        let mut checked = 0;
        for (file, text) in crate::init::EXAMPLE_MANIFESTS {
            let Some(Ok(d)) = parse_documents(text).into_iter().next() else {
                panic!("{file} does not parse")
            };
            let old = node_to_json(&d.root);
            let mut paths = Vec::new();
            leaves(&old, &mut Vec::new(), &mut paths);
            for path in paths {
                let mut new = old.clone();
                let mut at = &mut new;
                for k in &path {
                    at = &mut at[k.as_str()];
                }
                let is_list = at.is_array();
                *at = match at {
                    Json::Array(a) => Json::Array(a.iter().rev().cloned().collect()),
                    Json::Number(_) => json!(4242),
                    Json::Bool(b) => json!(!*b),
                    _ => json!("changed value"),
                };
                if new == old {
                    continue;
                }
                let out = match edit_document(text, &old, &new) {
                    Ok(out) => out,
                    Err(e) => panic!("{file} {path:?}: {e}"),
                };
                let before: Vec<&str> = text.lines().collect();
                let after: Vec<&str> = out.lines().collect();
                let changed = before.iter().zip(&after).filter(|(a, b)| a != b).count();
                if is_list {
                    // A list is replaced whole (a block list of scalars becomes a flow
                    // list); every comment survives.
                    let comments = before.iter().filter(|l| l.trim_start().starts_with('#'));
                    assert!(
                        comments.clone().all(|c| after.contains(c)),
                        "{file} {path:?}"
                    );
                } else {
                    assert_eq!(before.len(), after.len(), "{file} {path:?}:\n{out}");
                    assert_eq!(changed, 1, "{file} {path:?}:\n{out}");
                }
                checked += 1;
            }
        }
        assert!(checked > 100, "only {checked} edits checked");
    }

    #[test]
    fn crlf_line_ends_are_kept() {
        let doc = "a: 1\r\nb: 2  # two\r\n";
        let out = edit(doc, |v| v["b"] = json!(3));
        assert_eq!(out, "a: 1\r\nb: 3  # two\r\n");
    }

    #[test]
    fn comments_with_hashes_in_quotes_survive() {
        let doc = "spec:\n  cron: \"0 # 1\"  # nightly\n";
        let out = edit(doc, |v| v["spec"]["cron"] = json!("*/5 * * * *"));
        assert_eq!(out, "spec:\n  cron: \"*/5 * * * *\"  # nightly\n");
    }
}
