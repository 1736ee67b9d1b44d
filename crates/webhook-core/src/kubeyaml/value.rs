//! The value of a document as Kubernetes sees it (the JSON that `kubectl` builds from the
//! YAML), with the order of keys and the place in the file where each value was written.

use std::fmt;

use indexmap::IndexMap;
use serde::{
    Deserialize, Deserializer, Serialize, Serializer,
    de::{DeserializeSeed as _, MapAccess, SeqAccess, Visitor},
    ser::{SerializeMap, SerializeSeq},
};

/// A place in the input file: 1-based line and column (in characters). Line 0 means "not from
/// the input" (a value the injection added).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mark {
    pub line: usize,
    pub column: usize,
}

impl Mark {
    /// For values that come from no place in the input.
    pub const NONE: Mark = Mark { line: 0, column: 0 };

    pub fn is_none(self) -> bool {
        self.line == 0
    }
}

impl fmt::Display for Mark {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {} column {}", self.line, self.column)
    }
}

/// A value and where it was written.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub value: Value,
    pub mark: Mark,
}

/// A JSON value, as `sigs.k8s.io/yaml` produces it from YAML: keys are strings, numbers are
/// 64-bit integers or finite floats.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    /// Only for integers above `i64::MAX` (YAML reads them as unsigned).
    UInt(u64),
    Float(f64),
    String(String),
    Seq(Vec<Node>),
    Map(Map),
}

/// A mapping that keeps the order in which its keys were written.
pub type Map = IndexMap<String, Entry>;

/// One key of a [`Map`]: where the key was written, and its value.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub key_mark: Mark,
    pub node: Node,
}

impl Node {
    pub fn new(value: Value, mark: Mark) -> Self {
        Self { value, mark }
    }

    /// The value under `key` when this is a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(map) => map.get(key).map(|e| &e.node),
            _ => None,
        }
    }

    pub fn get_mut(&mut self, key: &str) -> Option<&mut Node> {
        match &mut self.value {
            Value::Map(map) => map.get_mut(key).map(|e| &mut e.node),
            _ => None,
        }
    }

    /// The node at a path of keys.
    pub fn at(&self, path: &[&str]) -> Option<&Node> {
        path.iter().try_fold(self, |node, key| node.get(key))
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_map(&self) -> Option<&Map> {
        match &self.value {
            Value::Map(map) => Some(map),
            _ => None,
        }
    }

    /// A short description of the value's type and value, for messages: `a boolean (true)`.
    pub fn describe(&self) -> String {
        match &self.value {
            Value::Null => "null".to_owned(),
            Value::Bool(b) => format!("a boolean ({b})"),
            Value::Int(_) | Value::UInt(_) | Value::Float(_) => {
                format!("a number ({})", serde_json::to_string(self).unwrap_or_default())
            }
            Value::String(s) => format!("a string ({s:?})"),
            Value::Seq(_) => "a list".to_owned(),
            Value::Map(_) => "a mapping".to_owned(),
        }
    }

    /// The same value as a `serde_json::Value` (key order is not kept by that type).
    pub fn to_json(&self) -> serde_json::Value {
        // Serialising a Node cannot fail: every key is a string and every float is finite.
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }

    /// Parses JSON text, keeping the order of keys; every node gets `mark`.
    pub fn from_json(text: &str, mark: Mark) -> Result<Node, serde_json::Error> {
        let mut de = serde_json::Deserializer::from_str(text);
        let node = MarkedSeed(mark).deserialize(&mut de)?;
        de.end()?;
        Ok(node)
    }
}

impl Serialize for Node {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match &self.value {
            Value::Null => serializer.serialize_unit(),
            Value::Bool(b) => serializer.serialize_bool(*b),
            Value::Int(i) => serializer.serialize_i64(*i),
            Value::UInt(u) => serializer.serialize_u64(*u),
            Value::Float(f) => serializer.serialize_f64(*f),
            Value::String(s) => serializer.serialize_str(s),
            Value::Seq(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Value::Map(map) => {
                let mut out = serializer.serialize_map(Some(map.len()))?;
                for (key, entry) in map {
                    out.serialize_entry(key, &entry.node)?;
                }
                out.end()
            }
        }
    }
}

/// Deserialises JSON into a [`Node`] with the given mark everywhere, keys in order.
struct MarkedSeed(Mark);

impl<'de> serde::de::DeserializeSeed<'de> for MarkedSeed {
    type Value = Node;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Node, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for MarkedSeed {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<Node, E> {
        Ok(Node::new(Value::Null, self.0))
    }

    fn visit_none<E>(self) -> Result<Node, E> {
        Ok(Node::new(Value::Null, self.0))
    }

    fn visit_bool<E>(self, v: bool) -> Result<Node, E> {
        Ok(Node::new(Value::Bool(v), self.0))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
        Ok(Node::new(Value::Int(v), self.0))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Node, E> {
        Ok(Node::new(
            i64::try_from(v).map_or(Value::UInt(v), Value::Int),
            self.0,
        ))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Node, E> {
        Ok(Node::new(Value::Float(v), self.0))
    }

    fn visit_str<E>(self, v: &str) -> Result<Node, E> {
        Ok(Node::new(Value::String(v.to_owned()), self.0))
    }

    fn visit_string<E>(self, v: String) -> Result<Node, E> {
        Ok(Node::new(Value::String(v), self.0))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(item) = seq.next_element_seed(MarkedSeed(self.0))? {
            items.push(item);
        }
        Ok(Node::new(Value::Seq(items), self.0))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Node, A::Error> {
        let mut map = Map::new();
        while let Some(key) = access.next_key::<String>()? {
            let node = access.next_value_seed(MarkedSeed(self.0))?;
            // Later duplicates win, as in encoding/json.
            map.insert(
                key,
                Entry {
                    key_mark: self.0,
                    node,
                },
            );
        }
        Ok(Node::new(Value::Map(map), self.0))
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Node, D::Error> {
        MarkedSeed(Mark::NONE).deserialize(deserializer)
    }
}
