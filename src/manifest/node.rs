//! A YAML document as a tree of located nodes, and a serde `Deserializer` over it.
//!
//! Owns: turning a located node tree into typed manifest structs while keeping the
//! position (line, column) and field path of every error, with "did you mean"
//! suggestions for unknown fields and variants.
//! Must not know: how YAML text is parsed (that is `yaml.rs`) or what the manifest
//! kinds mean (that is `types.rs` and `validate`).

use std::fmt;

use serde_json::Value as Json;

use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use crate::diagnostic::Pos;

/// One YAML node and where it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub pos: Pos,
    pub value: Value,
}

/// The value of a YAML node (YAML 1.2 core schema, strict booleans).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

impl Value {
    /// A short description of the value's type, for "expected X, found Y" messages.
    pub fn describe(&self) -> String {
        match self {
            Value::Null => "null".into(),
            Value::Bool(b) => format!("boolean `{b}`"),
            Value::Int(i) => format!("integer `{i}`"),
            Value::UInt(u) => format!("integer `{u}`"),
            Value::Float(f) => format!("number `{f}`"),
            Value::Str(s) => format!("string {s:?}"),
            Value::Seq(_) => "a list".into(),
            Value::Map(_) => "a mapping".into(),
        }
    }
}

impl Node {
    /// The value stored under `key` when this node is a mapping with string keys.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => entries
                .iter()
                .find(|(k, _)| matches!(&k.value, Value::Str(s) if s == key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// The string value of this node, if it is a string.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// Builds a node from the position reported by the YAML parser and its value.
pub(crate) fn node_at(line: u64, column: u64, value: Value) -> Node {
    Node {
        pos: Pos {
            line: u32::try_from(line).unwrap_or(u32::MAX),
            column: u32::try_from(column).unwrap_or(u32::MAX),
        },
        value,
    }
}

/// The untyped JSON value of a YAML node (mapping keys as strings).
pub fn node_to_json(node: &Node) -> Json {
    match &node.value {
        Value::Null => Json::Null,
        Value::Bool(b) => Json::Bool(*b),
        Value::Int(i) => Json::from(*i),
        Value::UInt(u) => Json::from(*u),
        Value::Float(f) => serde_json::Number::from_f64(*f).map_or(Json::Null, Json::Number),
        Value::Str(s) => Json::String(s.clone()),
        Value::Seq(items) => Json::Array(items.iter().map(node_to_json).collect()),
        Value::Map(entries) => Json::Object(
            entries
                .iter()
                .map(|(k, v)| {
                    let key = match &k.value {
                        Value::Str(s) => s.clone(),
                        _ => node_to_json(k).to_string(),
                    };
                    (key, node_to_json(v))
                })
                .collect(),
        ),
    }
}

/// An error found while decoding a node tree into typed manifests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// Where the offending node starts; `None` until the error passes a node.
    pub pos: Option<Pos>,
    /// The field path (`spec.ssh.port`) of the offending node, when known.
    pub path: Option<String>,
    pub message: String,
    /// What was expected, or a suggestion.
    pub help: Option<String>,
}

impl DecodeError {
    pub fn new(message: impl Into<String>) -> Self {
        DecodeError {
            pos: None,
            path: None,
            message: message.into(),
            help: None,
        }
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    fn at(mut self, pos: Pos, path: &Path) -> Self {
        if self.pos.is_none() {
            self.pos = Some(pos);
            let p = path.to_string();
            if !p.is_empty() {
                self.path = Some(p);
            }
        }
        self
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DecodeError {}

impl de::Error for DecodeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DecodeError::new(msg.to_string())
    }

    fn invalid_type(unexp: de::Unexpected, exp: &dyn de::Expected) -> Self {
        DecodeError::new(format!(
            "expected {exp}, found {}",
            describe_unexpected(&unexp)
        ))
    }

    fn invalid_value(unexp: de::Unexpected, exp: &dyn de::Expected) -> Self {
        DecodeError::new(format!(
            "invalid value {}: expected {exp}",
            describe_unexpected(&unexp)
        ))
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        let e = DecodeError::new(format!("unknown field `{field}`"));
        match did_you_mean(field, expected.iter().copied()) {
            Some(s) => e.with_help(format!("did you mean `{s}`?")),
            None if expected.is_empty() => e.with_help("no fields are allowed here"),
            None => e.with_help(format!("expected one of: {}", expected.join(", "))),
        }
    }

    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        let e = DecodeError::new(format!("unknown value `{variant}`"));
        let list = format!("expected one of: {}", expected.join(", "));
        match did_you_mean(variant, expected.iter().copied()) {
            Some(s) => e.with_help(format!("did you mean `{s}`? ({list})")),
            None => e.with_help(list),
        }
    }

    fn missing_field(field: &'static str) -> Self {
        DecodeError::new(format!("missing required field `{field}`"))
    }

    fn duplicate_field(field: &'static str) -> Self {
        DecodeError::new(format!("duplicate field `{field}`"))
    }
}

fn describe_unexpected(u: &de::Unexpected) -> String {
    match u {
        de::Unexpected::Bool(b) => format!("boolean `{b}`"),
        de::Unexpected::Unsigned(i) => format!("integer `{i}`"),
        de::Unexpected::Signed(i) => format!("integer `{i}`"),
        de::Unexpected::Float(f) => format!("number `{f}`"),
        de::Unexpected::Str(s) => format!("string {s:?}"),
        de::Unexpected::Unit => "null".into(),
        de::Unexpected::Seq => "a list".into(),
        de::Unexpected::Map => "a mapping".into(),
        other => other.to_string(),
    }
}

/// Inputs longer than this get no suggestion: names and time zones are far shorter, and
/// the distance costs time proportional to the product of the lengths.
pub const MAX_SUGGEST_LEN: usize = 128;

/// The closest candidate to `input` by edit distance, when it is close enough to be a typo.
/// Strings longer than [`MAX_SUGGEST_LEN`] are never compared, so a hostile input costs
/// nothing here.
pub fn did_you_mean<'a>(
    input: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    if input.len() > MAX_SUGGEST_LEN {
        return None;
    }
    let lower = input.to_ascii_lowercase();
    candidates
        .into_iter()
        .filter(|c| c.len() <= MAX_SUGGEST_LEN)
        .filter_map(|c| {
            let limit = (c.len().max(input.len()) / 3).max(1);
            // The distance is at least the difference in length.
            if c.len().abs_diff(input.len()) > limit {
                return None;
            }
            // Optimal string alignment: edits and adjacent transpositions cost 1.
            let d = strsim::osa_distance(&lower, &c.to_ascii_lowercase());
            (d <= limit).then_some((d, c))
        })
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// The field path of the node being decoded, as a linked list of segments.
#[derive(Clone, Copy)]
enum Path<'a> {
    Root,
    Key(&'a Path<'a>, &'a str),
    Index(&'a Path<'a>, usize),
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Path::Root => Ok(()),
            Path::Key(parent, k) => {
                if matches!(parent, Path::Root) {
                    write!(f, "{k}")
                } else {
                    write!(f, "{parent}.{k}")
                }
            }
            Path::Index(parent, i) => write!(f, "{parent}[{i}]"),
        }
    }
}

/// Decodes a typed value from a node tree; errors carry position and field path.
///
/// # Errors
/// A [`DecodeError`] for the first node that does not fit `T`.
pub fn decode<T: de::DeserializeOwned>(node: &Node) -> Result<T, DecodeError> {
    T::deserialize(NodeDe {
        node,
        path: Path::Root,
    })
}

struct NodeDe<'a> {
    node: &'a Node,
    path: Path<'a>,
}

impl NodeDe<'_> {
    fn type_error(&self, expected: &str) -> DecodeError {
        let mut e = DecodeError::new(format!(
            "expected {expected}, found {}",
            self.node.value.describe()
        ));
        if expected == "a string"
            && matches!(
                self.node.value,
                Value::Int(_) | Value::UInt(_) | Value::Float(_) | Value::Bool(_)
            )
        {
            e = e.with_help("quote the value to make it a string");
        }
        e.at(self.node.pos, &self.path)
    }
}

macro_rules! forward_to_any {
    ($($m:ident)*) => {$(
        fn $m<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DecodeError> {
            self.deserialize_any(v)
        }
    )*};
}

impl<'de, 'a> Deserializer<'de> for NodeDe<'a> {
    type Error = DecodeError;

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DecodeError> {
        let (pos, path) = (self.node.pos, self.path);
        let r = match &self.node.value {
            Value::Null => v.visit_unit(),
            Value::Bool(b) => v.visit_bool(*b),
            Value::Int(i) => v.visit_i64(*i),
            Value::UInt(u) => v.visit_u64(*u),
            Value::Float(f) => v.visit_f64(*f),
            Value::Str(s) => v.visit_str(s),
            Value::Seq(items) => v.visit_seq(SeqDe {
                items: items.iter().enumerate(),
                path: &path,
            }),
            Value::Map(entries) => v.visit_map(MapDe {
                entries: entries.iter(),
                value: None,
                path: &path,
            }),
        };
        r.map_err(|e| e.at(pos, &path))
    }

    fn deserialize_bool<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DecodeError> {
        match self.node.value {
            Value::Bool(_) => self.deserialize_any(v),
            _ => Err(self.type_error("true or false")),
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DecodeError> {
        match &self.node.value {
            Value::Str(s) => v
                .visit_str(s)
                .map_err(|e: DecodeError| e.at(self.node.pos, &self.path)),
            _ => Err(self.type_error("a string")),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DecodeError> {
        self.deserialize_str(v)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DecodeError> {
        self.deserialize_str(v)
    }

    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DecodeError> {
        match self.node.value {
            Value::Null => v.visit_none(),
            _ => v.visit_some(self),
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DecodeError> {
        match self.node.value {
            Value::Null => v.visit_unit(),
            _ => Err(self.type_error("null")),
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        v: V,
    ) -> Result<V::Value, DecodeError> {
        self.deserialize_unit(v)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        v: V,
    ) -> Result<V::Value, DecodeError> {
        v.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DecodeError> {
        match self.node.value {
            Value::Seq(_) => self.deserialize_any(v),
            _ => Err(self.type_error("a list")),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        v: V,
    ) -> Result<V::Value, DecodeError> {
        self.deserialize_seq(v)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        v: V,
    ) -> Result<V::Value, DecodeError> {
        self.deserialize_seq(v)
    }

    fn deserialize_map<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DecodeError> {
        match self.node.value {
            Value::Map(_) => self.deserialize_any(v),
            _ => Err(self.type_error("a mapping")),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, DecodeError> {
        if name == LOCATED_NAME {
            return v.visit_map(LocatedDe {
                de: Some(self),
                step: 0,
            });
        }
        let _ = fields;
        self.deserialize_map(v)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, DecodeError> {
        match &self.node.value {
            Value::Str(s) => v
                .visit_enum(s.as_str().into_deserializer())
                .map_err(|e: DecodeError| e.at(self.node.pos, &self.path)),
            _ => Err(self.type_error("a string")),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DecodeError> {
        v.visit_unit()
    }

    forward_to_any! {
        deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64 deserialize_i128
        deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64 deserialize_u128
        deserialize_f32 deserialize_f64 deserialize_char deserialize_bytes deserialize_byte_buf
    }
}

struct SeqDe<'a, 'p> {
    items: std::iter::Enumerate<std::slice::Iter<'a, Node>>,
    path: &'p Path<'p>,
}

impl<'de> SeqAccess<'de> for SeqDe<'_, '_> {
    type Error = DecodeError;
    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DecodeError> {
        match self.items.next() {
            None => Ok(None),
            Some((i, node)) => seed
                .deserialize(NodeDe {
                    node,
                    path: Path::Index(self.path, i),
                })
                .map(Some),
        }
    }
}

struct MapDe<'a, 'p> {
    entries: std::slice::Iter<'a, (Node, Node)>,
    value: Option<(&'a Node, &'a Node)>,
    path: &'p Path<'p>,
}

impl<'de> MapAccess<'de> for MapDe<'_, '_> {
    type Error = DecodeError;
    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DecodeError> {
        match self.entries.next() {
            None => Ok(None),
            Some((k, v)) => {
                self.value = Some((k, v));
                let key_path = match &k.value {
                    Value::Str(s) => Path::Key(self.path, s),
                    _ => *self.path,
                };
                match &k.value {
                    Value::Str(_) => seed
                        .deserialize(NodeDe {
                            node: k,
                            path: key_path,
                        })
                        .map(Some),
                    other => Err(DecodeError::new(format!(
                        "mapping keys must be strings, found {}",
                        other.describe()
                    ))
                    .at(k.pos, self.path)),
                }
            }
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, DecodeError> {
        let Some((k, v)) = self.value.take() else {
            return Err(DecodeError::new(
                "internal error: value requested before key",
            ));
        };
        let key = k.as_str().unwrap_or("?");
        seed.deserialize(NodeDe {
            node: v,
            path: Path::Key(self.path, key),
        })
    }
}

const LOCATED_NAME: &str = "$celeroot::Located";
const LOCATED_FIELDS: &[&str] = &["line", "column", "value"];

struct LocatedDe<'a> {
    de: Option<NodeDe<'a>>,
    step: u8,
}

impl<'de> MapAccess<'de> for LocatedDe<'_> {
    type Error = DecodeError;
    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DecodeError> {
        match LOCATED_FIELDS.get(usize::from(self.step)) {
            Some(name) => seed.deserialize((*name).into_deserializer()).map(Some),
            None => Ok(None),
        }
    }
    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, DecodeError> {
        let step = self.step;
        self.step += 1;
        let Some(de) = self.de.as_ref() else {
            return Err(DecodeError::new("internal error: located value read twice"));
        };
        match step {
            0 => seed.deserialize(de.node.pos.line.into_deserializer()),
            1 => seed.deserialize(de.node.pos.column.into_deserializer()),
            _ => match self.de.take() {
                Some(de) => seed.deserialize(de),
                None => Err(DecodeError::new("internal error: located value read twice")),
            },
        }
    }
}

/// A value together with the position of the YAML node it was read from.
///
/// Serializes, and appears in JSON Schemas, exactly like `T`. Equality ignores the position.
#[derive(Debug, Clone, Default)]
pub struct Located<T> {
    pub value: T,
    pub pos: Pos,
}

impl<T> Located<T> {
    pub fn new(value: T, pos: Pos) -> Self {
        Located { value, pos }
    }
}

impl<T: PartialEq> PartialEq for Located<T> {
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value
    }
}

impl<T> std::ops::Deref for Located<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T: Serialize> Serialize for Located<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.value.serialize(s)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Located<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Located<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a located value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Located<T>, A::Error> {
                let mut line = 0u32;
                let mut column = 0u32;
                let mut value = None;
                while let Some(k) = a.next_key::<String>()? {
                    match k.as_str() {
                        "line" => line = a.next_value()?,
                        "column" => column = a.next_value()?,
                        _ => value = Some(a.next_value()?),
                    }
                }
                let value = value.ok_or_else(|| de::Error::missing_field("value"))?;
                Ok(Located {
                    value,
                    pos: Pos { line, column },
                })
            }
        }
        d.deserialize_struct(LOCATED_NAME, LOCATED_FIELDS, V(std::marker::PhantomData))
    }
}

impl<T: schemars::JsonSchema> schemars::JsonSchema for Located<T> {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        T::schema_name()
    }
    fn schema_id() -> std::borrow::Cow<'static, str> {
        T::schema_id()
    }
    fn json_schema(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
        T::json_schema(g)
    }
    fn inline_schema() -> bool {
        T::inline_schema()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(line: u32, v: &str) -> Node {
        Node {
            pos: Pos { line, column: 3 },
            value: Value::Str(v.into()),
        }
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        #[allow(dead_code)]
        port: u16,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Outer {
        name: Located<String>,
        #[allow(dead_code)]
        inner: Inner,
    }

    fn map(line: u32, entries: Vec<(Node, Node)>) -> Node {
        Node {
            pos: Pos { line, column: 1 },
            value: Value::Map(entries),
        }
    }

    #[test]
    fn located_records_position() {
        let n = map(
            1,
            vec![
                (s(1, "name"), s(1, "web")),
                (
                    s(2, "inner"),
                    map(
                        3,
                        vec![(
                            s(3, "port"),
                            Node {
                                pos: Pos { line: 3, column: 9 },
                                value: Value::Int(22),
                            },
                        )],
                    ),
                ),
            ],
        );
        let o: Outer = decode(&n)
            .map_err(|e| e.message)
            .unwrap_or_else(|m| panic!("{m}"));
        assert_eq!(o.name.value, "web");
        assert_eq!(o.name.pos, Pos { line: 1, column: 3 });
    }

    #[test]
    fn errors_carry_path_and_position() {
        let bad_port = Node {
            pos: Pos { line: 7, column: 9 },
            value: Value::Int(70000),
        };
        let n = map(
            1,
            vec![
                (s(1, "name"), s(1, "web")),
                (s(2, "inner"), map(3, vec![(s(3, "port"), bad_port)])),
            ],
        );
        let e = decode::<Outer>(&n)
            .err()
            .unwrap_or_else(|| panic!("expected an error"));
        assert_eq!(e.pos, Some(Pos { line: 7, column: 9 }));
        assert_eq!(e.path.as_deref(), Some("inner.port"));
        assert!(e.message.contains("70000"), "{}", e.message);
    }

    #[test]
    fn unknown_field_suggests_the_closest() {
        let n = map(
            1,
            vec![(s(1, "name"), s(1, "web")), (s(4, "innr"), map(5, vec![]))],
        );
        let e = decode::<Outer>(&n)
            .err()
            .unwrap_or_else(|| panic!("expected an error"));
        assert_eq!(e.pos, Some(Pos { line: 4, column: 3 }));
        assert_eq!(e.message, "unknown field `innr`");
        assert_eq!(e.help.as_deref(), Some("did you mean `inner`?"));
    }

    #[test]
    fn did_you_mean_ignores_distant_words() {
        assert_eq!(
            did_you_mean("adress", ["address", "roles"]),
            Some("address")
        );
        assert_eq!(did_you_mean("zzzzzz", ["address", "roles"]), None);
    }
}
