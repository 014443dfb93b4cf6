//! The YAML reader: the only file that names the YAML library (serde-saphyr).
//!
//! Owns: splitting a file into documents, parsing each into a located [`Node`] tree
//! with safe options (strict booleans, duplicate keys rejected, bounded alias
//! expansion), and turning parser errors into positions and messages.
//! Must not know: manifest kinds or their fields.

use serde::de::{MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};

use super::node::{node_at, Node, Pos, Value};

/// Alias expansion budget: events replayed from aliases in one document.
/// Real manifests replay a few dozen; an alias bomb asks for billions.
pub const MAX_ALIAS_REPLAYED_EVENTS: usize = 10_000;

/// One YAML document of a file.
#[derive(Debug, Clone)]
pub struct Document {
    /// 1-based line where the document starts in its file.
    pub start_line: u32,
    pub root: Node,
}

/// A YAML syntax or budget error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlError {
    pub pos: Option<Pos>,
    pub message: String,
}

/// Wrapper that reads a [`Node`] with its position from serde-saphyr.
pub(crate) struct ParsedNode(pub Node);

impl<'de> Deserialize<'de> for ParsedNode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = serde_saphyr::Spanned::<Value>::deserialize(d)?;
        let loc = s.referenced;
        Ok(ParsedNode(node_at(loc.line(), loc.column(), s.value)))
    }
}

/// Reads a node's value from serde-saphyr, the children with their positions (through
/// [`ParsedNode`]). Here, with the YAML reader, so `node` knows nothing of YAML.
impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Value;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("any YAML value")
            }
            fn visit_unit<E>(self) -> Result<Value, E> {
                Ok(Value::Null)
            }
            fn visit_none<E>(self) -> Result<Value, E> {
                Ok(Value::Null)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
                Value::deserialize(d)
            }
            fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
                Ok(Value::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
                Ok(Value::Int(v))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
                Ok(match i64::try_from(v) {
                    Ok(i) => Value::Int(i),
                    Err(_) => Value::UInt(v),
                })
            }
            fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
                Ok(Value::Float(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<Value, E> {
                Ok(Value::Str(v.to_owned()))
            }
            fn visit_string<E>(self, v: String) -> Result<Value, E> {
                Ok(Value::Str(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Value, A::Error> {
                let mut out = Vec::new();
                while let Some(n) = a.next_element::<ParsedNode>()? {
                    out.push(n.0);
                }
                Ok(Value::Seq(out))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Value, A::Error> {
                let mut out = Vec::new();
                while let Some(k) = a.next_key::<ParsedNode>()? {
                    let v = a.next_value::<ParsedNode>()?;
                    out.push((k.0, v.0));
                }
                Ok(Value::Map(out))
            }
        }
        d.deserialize_any(V)
    }
}

fn options() -> serde_saphyr::Options {
    let mut alias_limits = serde_saphyr::options::AliasLimits::default();
    alias_limits.max_total_replayed_events = MAX_ALIAS_REPLAYED_EVENTS;
    alias_limits.max_replay_stack_depth = 16;
    serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_documents: 1,
            max_nodes: 200_000,
            max_depth: 64,
        },
        alias_limits: alias_limits,
        strict_booleans: true,
        leading_zero_numbers_as_strings: true,
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::Error,
        non_finite_float_policy: serde_saphyr::NonFiniteFloatPolicy::Reject,
        with_snippet: false,
    }
}

/// Splits `text` into YAML documents at column-0 `---` markers and parses each one.
///
/// Documents holding only comments or blank lines are skipped. Each result is
/// independent, so one broken document does not hide the others.
pub fn parse_documents(text: &str) -> Vec<Result<Document, YamlError>> {
    split_documents(text)
        .into_iter()
        .map(|(start_line, chunk)| parse_one(start_line, chunk))
        .collect()
}

fn is_marker(line: &str, marker: &str) -> bool {
    line.strip_prefix(marker)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t', '\r', '\n']))
}

fn split_documents(text: &str) -> Vec<(u32, &str)> {
    document_chunks(text)
        .into_iter()
        .map(|(line, range)| (line, &text[range]))
        .collect()
}

/// The documents of `text` that have content, as `(first line, byte range)`: a range
/// starts at its `---` marker (or the start of the file) and ends where the next
/// document's marker starts.
pub fn document_chunks(text: &str) -> Vec<(u32, std::ops::Range<usize>)> {
    let mut docs = Vec::new();
    let mut start = 0usize;
    let mut start_line = 1u32;
    let mut offset = 0usize;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let line_no = u32::try_from(i + 1).unwrap_or(u32::MAX);
        if is_marker(line, "---") && offset > start {
            docs.push((start_line, start..offset));
            start = offset;
            start_line = line_no;
        }
        offset += line.len();
    }
    docs.push((start_line, start..text.len()));
    docs.into_iter()
        .filter(|(_, range)| has_content(&text[range.clone()]))
        .collect()
}

fn has_content(chunk: &str) -> bool {
    chunk.lines().any(|l| {
        let t = l.trim();
        !(t.is_empty() || t.starts_with('#') || is_marker(l, "---") || is_marker(l, "..."))
            || (is_marker(l, "---") && !l[3..].trim().is_empty() && !l[3..].trim().starts_with('#'))
    })
}

fn parse_one(start_line: u32, chunk: &str) -> Result<Document, YamlError> {
    let shift = |line: u64, column: u64| Pos {
        line: u32::try_from(line)
            .unwrap_or(u32::MAX)
            .saturating_add(start_line - 1),
        column: u32::try_from(column).unwrap_or(u32::MAX),
    };
    match serde_saphyr::from_str_with_options::<ParsedNode>(chunk, options()) {
        Ok(ParsedNode(mut root)) => {
            shift_lines(&mut root, start_line - 1);
            Ok(Document { start_line, root })
        }
        Err(e) => {
            let pos = e
                .location()
                .filter(|l| l.line() > 0)
                .map(|l| shift(l.line(), l.column()));
            Err(YamlError {
                pos,
                message: clean_message(&e),
            })
        }
    }
}

fn shift_lines(node: &mut Node, by: u32) {
    node.pos.line = node.pos.line.saturating_add(by);
    match &mut node.value {
        Value::Seq(items) => items.iter_mut().for_each(|n| shift_lines(n, by)),
        Value::Map(entries) => entries.iter_mut().for_each(|(k, v)| {
            shift_lines(k, by);
            shift_lines(v, by);
        }),
        _ => {}
    }
}

/// The parser's message without its own location suffix (we print locations ourselves).
fn clean_message(e: &serde_saphyr::Error) -> String {
    let text = e.without_snippet().to_string();
    let first = text
        .lines()
        .next()
        .unwrap_or("invalid YAML")
        .trim()
        .to_string();
    let lowered = first.to_ascii_lowercase();
    let mut base = first.as_str();
    for cut in [" at line ", ", set DuplicateKeyPolicy"] {
        if let Some(i) = base.find(cut) {
            base = &base[..i];
        }
    }
    if lowered.contains("unknown anchor") {
        format!("{base} (a value starting with `*` is a YAML alias: quote it, e.g. `cron: \"*/5 * * * *\"`)")
    } else if lowered.contains("replay") || lowered.contains("expansion") {
        format!("{base} (YAML aliases are limited to {MAX_ALIAS_REPLAYED_EVENTS} replayed events per document)")
    } else {
        base.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_multi_document_streams_and_keeps_line_numbers() {
        let text = "# comment\na: 1\n---\nb: 2\nc: 3\n---\n# only a comment\n";
        let docs = parse_documents(text);
        assert_eq!(docs.len(), 2);
        let Ok(second) = &docs[1] else {
            panic!("second document failed")
        };
        assert_eq!(second.start_line, 3);
        let c = second.root.get("c").map(|n| n.pos.line);
        assert_eq!(c, Some(5));
    }

    #[test]
    fn duplicate_keys_are_rejected_with_a_location() {
        let docs = parse_documents("a: 1\nb: 2\na: 3\n");
        let Err(e) = &docs[0] else {
            panic!("duplicate key accepted")
        };
        assert!(
            e.message.to_lowercase().contains("duplicate"),
            "{}",
            e.message
        );
        assert_eq!(e.pos.map(|p| p.line), Some(3));
    }

    #[test]
    fn yaml_1_1_booleans_stay_strings() {
        let docs = parse_documents("a: yes\nb: on\nc: 010\n");
        let Ok(d) = &docs[0] else {
            panic!("parse failed")
        };
        assert_eq!(d.root.get("a").and_then(Node::as_str), Some("yes"));
        assert_eq!(d.root.get("b").and_then(Node::as_str), Some("on"));
        assert_eq!(d.root.get("c").and_then(Node::as_str), Some("010"));
    }

    #[test]
    fn alias_bomb_is_rejected() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let prev = i - 1;
            text.push_str(&format!("a{i}: &a{i} [*a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}]\n"));
        }
        let docs = parse_documents(&text);
        assert!(docs[0].is_err());
    }
}
