//! One YAML document to a [`Node`], as `sigs.k8s.io/yaml` reads it for `kubectl`.
//!
//! The events come from `libyaml-safer`, a safe Rust port of libyaml; go-yaml v2 (the parser
//! `sigs.k8s.io/yaml` forks) is a Go port of the same C library. On the events, this module
//! does what go-yaml v2's decoder does when it decodes into `interface{}`, and then what
//! `sigs.k8s.io/yaml` does to make JSON of it:
//!
//! - only the first document of the text counts (text after a `...` end marker is ignored);
//! - anchors are registered when their node starts, aliases expand to a copy of the anchored
//!   value, an unknown anchor or an alias inside its own anchor is an error, and go-yaml's
//!   limit on alias expansion ("excessive aliasing") applies;
//! - plain scalars resolve with YAML 1.1 rules ([`super::resolve`]), quoted ones are strings,
//!   `!!binary` is base64-decoded;
//! - merge keys (`<<: *base`, `<<: [*a, *b]`) apply in the order they are written: a merge
//!   overwrites keys set before it, later keys overwrite it, and in a list of merges the
//!   earlier maps win;
//! - a duplicate key keeps the last value;
//! - keys become strings: integers in decimal, booleans as `true`/`false`, floats as Go's
//!   float32 formatting; a null or list key, or two keys of different types that become the
//!   same string, are refused (kubectl refuses the first, and keeps one of the two at random
//!   for the second);
//! - `.inf`/`.nan` as a value are refused (kubectl's JSON encoder refuses them).
//!
//! Nesting deeper than [`MAX_DEPTH`] is refused before the scanner goes further: libyaml's
//! scanner spends time proportional to the flow nesting on every token.

use std::collections::HashMap;

use base64::Engine as _;
use libyaml_safer::{EventData, MappingStyle, Parser, ScalarStyle, SequenceStyle};

use super::{
    resolve::{BINARY_TAG, MERGE_TAG, Scalar, go_float_key, resolve},
    value::{Entry, Map, Mark, Node, Value},
};

/// Deepest nesting of collections (and of aliases expanding into collections) a document may
/// have. Real manifests stay far below (a CRD schema reaches about 40); kubectl's own limit is
/// 10000, where libyaml's scanner already takes seconds per document.
pub const MAX_DEPTH: usize = 256;

/// Why a document cannot be read, and where.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ReadError {
    pub mark: Mark,
    pub message: String,
}

impl ReadError {
    fn new(mark: Mark, message: impl Into<String>) -> Self {
        Self {
            mark,
            message: message.into(),
        }
    }
}

/// A document's value, and the lines of the text its content spans.
#[derive(Clone, Debug, PartialEq)]
pub struct Document {
    pub node: Node,
    /// 0-based lines of the text (the chunk) where the content starts and ends; the lines
    /// before and after hold only comments, blank lines, markers or ignored text.
    pub content_lines: (usize, usize),
}

/// Reads the first document of `text`. `first_line` is the file line of the text's first line,
/// for marks. `None` for a document with no content (only comments, or nothing).
pub fn read_document(text: &str, first_line: usize) -> Result<Option<Document>, ReadError> {
    // go-yaml drops a byte-order mark before it scans; so does this (libyaml-safer's own check
    // refuses any text starting with a 0xEF byte that is not a mark, such as U+FF01).
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut input = text.as_bytes();
    let mut composer = Composer {
        parser: Parser::new(),
        text,
        nodes: Vec::new(),
        anchors: HashMap::new(),
        first_line,
        flow: Vec::new(),
        first_content: None,
        last_content: 0,
    };
    composer.parser.set_encoding(libyaml_safer::Encoding::Utf8);
    composer.parser.set_input_string(&mut input);
    let Some(root) = composer.document()? else {
        return Ok(None);
    };
    let mut decoder = Decoder {
        nodes: &composer.nodes,
        decode_count: 1, // go-yaml counts the document node itself
        alias_count: 0,
        alias_depth: 0,
        active_aliases: Vec::new(),
    };
    let node = decoder.value(root, 0)?;
    check_finite(&node)?;
    let first = composer.first_content.unwrap_or(0);
    Ok(Some(Document {
        node,
        content_lines: (first, composer.last_content.max(first)),
    }))
}

/// A node of the document as parsed, before aliases and merges are resolved.
enum Raw {
    Scalar {
        text: String,
        tag: String,
        plain: bool,
    },
    Seq(Vec<usize>),
    /// Keys and values, alternating.
    Map(Vec<usize>),
    Alias {
        name: String,
        target: usize,
    },
}

struct RawNode {
    raw: Raw,
    mark: Mark,
}

struct Composer<'a> {
    parser: Parser<&'a mut &'a [u8]>,
    text: &'a str,
    nodes: Vec<RawNode>,
    anchors: HashMap<String, usize>,
    first_line: usize,
    /// For each open collection, whether it is a flow one.
    flow: Vec<bool>,
    /// Chunk lines of the first and last content (see [`Document::content_lines`]).
    first_content: Option<usize>,
    last_content: usize,
}

enum Next {
    Node(usize),
    End,
}

impl Composer<'_> {
    fn mark(&self, m: libyaml_safer::Mark) -> Mark {
        Mark {
            line: self.first_line + usize::try_from(m.line).unwrap_or(usize::MAX / 2),
            column: usize::try_from(m.column).unwrap_or(usize::MAX / 2) + 1,
        }
    }

    fn event(&mut self) -> Result<libyaml_safer::Event, ReadError> {
        self.parser.parse().map_err(|e| {
            let mark = e.problem_mark().or(e.context_mark()).unwrap_or_default();
            let mut message = e.problem().to_owned();
            if let Some(context) = e.context() {
                message = format!("{context}: {message}");
            }
            ReadError::new(self.mark(mark), message)
        })
    }

    fn document(&mut self) -> Result<Option<usize>, ReadError> {
        let _stream_start = self.event()?;
        let start = self.event()?;
        match start.data {
            EventData::DocumentStart { .. } => {}
            _ => return Ok(None),
        }
        let root = match self.node(0)? {
            Next::Node(root) => root,
            Next::End => return Ok(None),
        };
        // The document end; go-yaml reads nothing after it.
        let end = self.event()?;
        debug_assert!(matches!(end.data, EventData::DocumentEnd { .. }));
        Ok(Some(root))
    }

    /// Two scalars libyaml reads and go-yaml v2 refuses: a `\\/` escape in double quotes, and a
    /// `?` inside a plain scalar in a flow collection (go-yaml ends the scalar there).
    fn check_go_yaml_scalar(
        &self,
        value: &str,
        style: ScalarStyle,
        start: libyaml_safer::Mark,
        end: libyaml_safer::Mark,
        mark: Mark,
    ) -> Result<(), ReadError> {
        match style {
            ScalarStyle::DoubleQuoted => {
                let raw = usize::try_from(start.index)
                    .ok()
                    .zip(usize::try_from(end.index).ok())
                    .and_then(|(a, b)| self.text.get(a..b))
                    .unwrap_or_default();
                let mut escaped = false;
                for c in raw.chars() {
                    if escaped && c == '/' {
                        return Err(ReadError::new(
                            mark,
                            "found unknown escape character \\/: kubectl's YAML parser (go-yaml v2) does not know it; write / alone",
                        ));
                    }
                    escaped = !escaped && c == '\\';
                }
                Ok(())
            }
            ScalarStyle::Plain if self.flow.last() == Some(&true) && value.contains('?') => {
                Err(ReadError::new(
                    mark,
                    "a '?' inside a plain scalar in [ ] or { }: kubectl's YAML parser (go-yaml v2) ends the scalar there and fails; quote the value",
                ))
            }
            _ => Ok(()),
        }
    }

    fn push(&mut self, raw: Raw, mark: Mark, anchor: Option<String>) -> usize {
        let index = self.nodes.len();
        self.nodes.push(RawNode { raw, mark });
        if let Some(anchor) = anchor {
            self.anchors.insert(anchor, index);
        }
        index
    }

    /// Notes the lines a content event spans: scalars, aliases and the ends of flow
    /// collections (a block collection ends where the next token starts, maybe after comments).
    /// A block scalar's end mark is at the start of the line after it.
    fn note_content(&mut self, event: &libyaml_safer::Event) {
        let line = |m: libyaml_safer::Mark| usize::try_from(m.line).unwrap_or(usize::MAX / 2);
        let (start, end) = (line(event.start_mark), line(event.end_mark));
        if self.first_content.is_none() {
            self.first_content = Some(start);
        }
        let last = match &event.data {
            EventData::Scalar {
                style: ScalarStyle::Literal | ScalarStyle::Folded,
                ..
            } => end.saturating_sub(1).max(start),
            EventData::Scalar { .. } | EventData::Alias { .. } => end,
            EventData::SequenceStart { style, .. } => {
                self.flow.push(*style == SequenceStyle::Flow);
                return;
            }
            EventData::MappingStart { style, .. } => {
                self.flow.push(*style == MappingStyle::Flow);
                return;
            }
            EventData::SequenceEnd | EventData::MappingEnd if self.flow.pop() == Some(true) => end,
            _ => return,
        };
        self.last_content = self.last_content.max(last);
    }

    fn node(&mut self, depth: usize) -> Result<Next, ReadError> {
        let event = self.event()?;
        self.note_content(&event);
        let mark = self.mark(event.start_mark);
        Ok(Next::Node(match event.data {
            EventData::Scalar {
                anchor,
                tag,
                value,
                plain_implicit,
                style,
                ..
            } => {
                self.check_go_yaml_scalar(&value, style, event.start_mark, event.end_mark, mark)?;
                self.push(
                    Raw::Scalar {
                        text: value,
                        tag: tag.unwrap_or_default(),
                        plain: plain_implicit,
                    },
                    mark,
                    anchor,
                )
            }
            EventData::Alias { anchor } => {
                let Some(&target) = self.anchors.get(&anchor) else {
                    return Err(ReadError::new(
                        mark,
                        format!("unknown anchor '{anchor}' referenced"),
                    ));
                };
                self.push(Raw::Alias { name: anchor, target }, mark, None)
            }
            EventData::SequenceStart { anchor, .. } => {
                check_depth(depth, mark)?;
                let index = self.push(Raw::Seq(Vec::new()), mark, anchor);
                let mut items = Vec::new();
                while let Next::Node(item) = self.node(depth + 1)? {
                    items.push(item);
                }
                self.nodes[index].raw = Raw::Seq(items);
                index
            }
            EventData::MappingStart { anchor, .. } => {
                check_depth(depth, mark)?;
                let index = self.push(Raw::Map(Vec::new()), mark, anchor);
                let mut children = Vec::new();
                while let Next::Node(key) = self.node(depth + 1)? {
                    children.push(key);
                    match self.node(depth + 1)? {
                        Next::Node(value) => children.push(value),
                        Next::End => return Err(ReadError::new(mark, "a mapping key without a value")),
                    }
                }
                self.nodes[index].raw = Raw::Map(children);
                index
            }
            EventData::SequenceEnd
            | EventData::MappingEnd
            | EventData::DocumentEnd { .. }
            | EventData::StreamEnd => {
                return Ok(Next::End);
            }
            EventData::StreamStart { .. } | EventData::DocumentStart { .. } => {
                return Err(ReadError::new(mark, "unexpected start of a document"));
            }
        }))
    }
}

fn check_depth(depth: usize, mark: Mark) -> Result<(), ReadError> {
    if depth >= MAX_DEPTH {
        return Err(ReadError::new(
            mark,
            format!("collections nest deeper than {MAX_DEPTH} levels; inject refuses such documents"),
        ));
    }
    Ok(())
}

/// A key as go-yaml v2 holds it in a `map[interface{}]interface{}`, before `sigs.k8s.io/yaml`
/// turns it into a string.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Key {
    Bool(bool),
    Int(i64),
    /// The float's bits (+0 and -0 are one key); NaN keys never equal anything, so each NaN
    /// gets its own number.
    Float(u64),
    NaN(usize),
    Str(String),
}

/// A mapping being decoded: go-yaml's typed keys, in the order first set.
struct TypedMap {
    /// go-yaml's key, the JSON key `sigs.k8s.io/yaml` makes of it, where it was written, and the
    /// value (the last one written for that key).
    entries: Vec<(Key, String, Mark, Node)>,
    index: HashMap<Key, usize>,
    nans: usize,
}

struct Decoder<'a> {
    nodes: &'a [RawNode],
    decode_count: usize,
    alias_count: usize,
    alias_depth: usize,
    active_aliases: Vec<usize>,
}

/// go-yaml v2's `allowedAliasRatio`.
fn allowed_alias_ratio(decode_count: usize) -> f64 {
    const LOW: f64 = 400_000.0;
    const HIGH: f64 = 4_000_000.0;
    #[allow(clippy::cast_precision_loss)]
    let count = decode_count as f64;
    if count <= LOW {
        0.99
    } else if count >= HIGH {
        0.10
    } else {
        0.99 - 0.89 * ((count - LOW) / (HIGH - LOW))
    }
}

impl Decoder<'_> {
    /// go-yaml's bookkeeping at the top of `unmarshal`.
    fn count(&mut self, mark: Mark) -> Result<(), ReadError> {
        self.decode_count += 1;
        if self.alias_depth > 0 {
            self.alias_count += 1;
        }
        #[allow(clippy::cast_precision_loss)]
        if self.alias_count > 100
            && self.decode_count > 1000
            && self.alias_count as f64 / self.decode_count as f64 > allowed_alias_ratio(self.decode_count)
        {
            return Err(ReadError::new(mark, "document contains excessive aliasing"));
        }
        Ok(())
    }

    /// Enters an alias: cycle check and depth.
    fn enter_alias(&mut self, index: usize) -> Result<usize, ReadError> {
        let nodes = self.nodes;
        let node = &nodes[index];
        let Raw::Alias { name, target } = &node.raw else {
            return Ok(index);
        };
        if self.active_aliases.contains(&index) {
            return Err(ReadError::new(
                node.mark,
                format!("anchor '{name}' value contains itself"),
            ));
        }
        self.active_aliases.push(index);
        self.alias_depth += 1;
        Ok(*target)
    }

    fn leave_alias(&mut self) {
        self.active_aliases.pop();
        self.alias_depth -= 1;
    }

    /// go-yaml's `unmarshal` of a node into an `interface{}`.
    fn value(&mut self, index: usize, depth: usize) -> Result<Node, ReadError> {
        let nodes = self.nodes;
        let mark = nodes[index].mark;
        self.count(mark)?;
        if matches!(self.nodes[index].raw, Raw::Alias { .. }) {
            let target = self.enter_alias(index)?;
            let result = self.value(target, depth);
            self.leave_alias();
            // The value is the anchored one, and so is its place in the file.
            return result;
        }
        if depth >= MAX_DEPTH && !matches!(self.nodes[index].raw, Raw::Scalar { .. }) {
            return Err(ReadError::new(
                mark,
                format!(
                    "collections nest deeper than {MAX_DEPTH} levels (through aliases); inject refuses such documents"
                ),
            ));
        }
        match &nodes[index].raw {
            Raw::Scalar { text, tag, plain } => scalar(text, tag, *plain, mark).map(|v| Node::new(v, mark)),
            Raw::Seq(items) => {
                let mut out = Vec::with_capacity(items.len());
                for &item in items {
                    let node = self.value(item, depth + 1)?;
                    check_finite(&node)?;
                    out.push(node);
                }
                Ok(Node::new(Value::Seq(out), mark))
            }
            Raw::Map(_) => {
                let mut map = TypedMap {
                    entries: Vec::new(),
                    index: HashMap::new(),
                    nans: 0,
                };
                self.mapping(index, &mut map, depth)?;
                Ok(Node::new(Value::Map(stringify_keys(map)?), mark))
            }
            Raw::Alias { .. } => unreachable!("handled above"),
        }
    }

    /// go-yaml's `mapping` into an existing map (merges write into the map being built).
    fn mapping(&mut self, index: usize, out: &mut TypedMap, depth: usize) -> Result<(), ReadError> {
        let nodes = self.nodes;
        let Raw::Map(children) = &nodes[index].raw else {
            return Ok(());
        };
        for pair in children.chunks(2) {
            let (key, value) = (pair[0], pair[1]);
            if self.is_merge(key) {
                self.merge(value, out, depth)?;
                continue;
            }
            let key_node = self.value(key, depth + 1)?;
            let mark = key_node.mark;
            let (typed, text) = match key_node.value {
                Value::String(s) => (Key::Str(s.clone()), s),
                Value::Int(i) => (Key::Int(i), i.to_string()),
                Value::Bool(b) => (Key::Bool(b), b.to_string()),
                Value::Float(f) if f.is_nan() => {
                    out.nans += 1;
                    (Key::NaN(out.nans), go_float_key(f))
                }
                Value::Float(f) => (
                    Key::Float(if f == 0.0 { 0 } else { f.to_bits() }),
                    go_float_key(f),
                ),
                // go-yaml decodes these keys; sigs.k8s.io/yaml then fails to convert them.
                Value::UInt(u) => {
                    return Err(ReadError::new(
                        mark,
                        format!(
                            "map key {u} is larger than a 64-bit signed integer, which kubectl cannot convert to JSON"
                        ),
                    ));
                }
                Value::Null => {
                    return Err(ReadError::new(
                        mark,
                        "a null map key, which kubectl cannot convert to JSON",
                    ));
                }
                Value::Seq(_) | Value::Map(_) => {
                    return Err(ReadError::new(mark, "invalid map key: a list or mapping"));
                }
            };
            let node = self.value(value, depth + 1)?;
            check_finite(&node)?;
            match out.index.get(&typed) {
                Some(&i) => out.entries[i] = (typed, text, mark, node),
                None => {
                    out.index.insert(typed.clone(), out.entries.len());
                    out.entries.push((typed, text, mark, node));
                }
            }
        }
        Ok(())
    }

    fn is_merge(&self, index: usize) -> bool {
        matches!(&self.nodes[index].raw, Raw::Scalar { text, tag, plain } if text == "<<" && (*plain || tag == MERGE_TAG))
    }

    /// go-yaml's `merge`: a mapping, an alias of one, or a list of those (applied last to
    /// first, so the first wins).
    fn merge(&mut self, index: usize, out: &mut TypedMap, depth: usize) -> Result<(), ReadError> {
        let nodes = self.nodes;
        let node = &nodes[index];
        let want_map = || {
            ReadError::new(
                node.mark,
                "map merge requires map or sequence of maps as the value",
            )
        };
        match &node.raw {
            Raw::Map(_) => {
                self.count(node.mark)?;
                self.mapping(index, out, depth)
            }
            Raw::Alias { target, .. } => {
                if !matches!(nodes[*target].raw, Raw::Map(_)) {
                    return Err(want_map());
                }
                self.merge_alias(index, out, depth)
            }
            Raw::Seq(items) => {
                for &item in items.iter().rev() {
                    match &nodes[item].raw {
                        Raw::Alias { target, .. } => {
                            if !matches!(nodes[*target].raw, Raw::Map(_)) {
                                return Err(want_map());
                            }
                            self.merge_alias(item, out, depth)?;
                        }
                        Raw::Map(_) => {
                            self.count(nodes[item].mark)?;
                            self.mapping(item, out, depth)?;
                        }
                        _ => return Err(want_map()),
                    }
                }
                Ok(())
            }
            Raw::Scalar { .. } => Err(want_map()),
        }
    }

    fn merge_alias(&mut self, index: usize, out: &mut TypedMap, depth: usize) -> Result<(), ReadError> {
        let mark = self.nodes[index].mark;
        self.count(mark)?; // the alias node
        let target = self.enter_alias(index)?;
        let result = self
            .count(self.nodes[target].mark)
            .and_then(|()| self.mapping(target, out, depth));
        self.leave_alias();
        result
    }
}

fn not_json(mark: Mark, f: f64) -> ReadError {
    let text = if f.is_nan() {
        ".nan"
    } else if f > 0.0 {
        ".inf"
    } else {
        "-.inf"
    };
    ReadError::new(
        mark,
        format!(
            "{text} is not a JSON number, so kubectl refuses this document; quote it (\"{text}\") if it is meant as a string"
        ),
    )
}

/// go-yaml v2's `scalar` into an `interface{}`.
fn scalar(text: &str, tag: &str, plain: bool, mark: Mark) -> Result<Value, ReadError> {
    if tag.is_empty() && !plain {
        return Ok(Value::String(text.to_owned()));
    }
    if tag == BINARY_TAG {
        let engine = base64::engine::GeneralPurpose::new(
            &base64::alphabet::STANDARD,
            base64::engine::GeneralPurposeConfig::new()
                .with_decode_allow_trailing_bits(true)
                .with_decode_padding_mode(base64::engine::DecodePaddingMode::RequireCanonical),
        );
        let cleaned: String = text.chars().filter(|c| !matches!(c, '\r' | '\n')).collect();
        let bytes = engine
            .decode(cleaned)
            .map_err(|_| ReadError::new(mark, "!!binary value contains invalid base64 data"))?;
        return Ok(Value::String(go_json_string(&bytes)));
    }
    Ok(match resolve(tag, text).map_err(|m| ReadError::new(mark, m))? {
        Scalar::Null => Value::Null,
        Scalar::Bool(b) => Value::Bool(b),
        Scalar::Int(i) => Value::Int(i),
        Scalar::UInt(u) => Value::UInt(u),
        Scalar::Float(f) => Value::Float(f),
        Scalar::Str | Scalar::Timestamp => Value::String(text.to_owned()),
    })
}

/// Bytes as Go's JSON encoder writes them: each byte of an invalid UTF-8 sequence becomes
/// U+FFFD.
fn go_json_string(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        out.push_str(chunk.valid());
        for _ in chunk.invalid() {
            out.push('\u{FFFD}');
        }
    }
    out
}

/// `sigs.k8s.io/yaml`'s key conversion: refuses two different keys that print the same.
fn stringify_keys(map: TypedMap) -> Result<Map, ReadError> {
    let mut out = Map::with_capacity(map.entries.len());
    for (_, text, key_mark, node) in map.entries {
        if let Some(other) = out.get(&text) {
            return Err(ReadError::new(
                key_mark,
                format!(
                    "this key and the one at {} are different YAML values that both become the JSON key {text:?}; kubectl keeps one of them at random: write the key once",
                    other.key_mark
                ),
            ));
        }
        out.insert(text, Entry { key_mark, node });
    }
    Ok(out)
}

fn check_finite(node: &Node) -> Result<(), ReadError> {
    match node.value {
        Value::Float(f) if !f.is_finite() => Err(not_json(node.mark, f)),
        _ => Ok(()),
    }
}
