//! A manifest stream split into documents the way `kubectl apply -f` splits it
//! (apimachinery's `YAMLOrJSONDecoder`), keeping every byte of the input.
//!
//! - A stream whose first non-space character (within 4096 bytes) is `{` is first read as a
//!   sequence of JSON values (`{...} {...}`); when the first or second value is not JSON, the
//!   rest, from the start of that value (after spaces up to the first line break), is read as
//!   YAML. After two JSON values, a value that is not JSON is an error.
//! - YAML is split into lines, `\n` or `\r\n` ended. A line starting with `---` ends the
//!   document; after `---` only spaces and a `#` comment may follow (`--- |` is an error). Such
//!   a line in a document's text is never passed to the YAML parser, and an empty document
//!   (between two `---`) is skipped. Each document's lines are parsed with `\r\n` turned into
//!   `\n` and a final line break added ([`super::read`]).
//! - Documents that read as nothing or as `null` are skipped by kubectl; here they are kept
//!   (with no value) so the output can copy them.

use super::{
    read::{ReadError, read_document},
    value::{Mark, Node},
};

/// Which reader kubectl used for a document.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Syntax {
    /// A YAML document (which may be written as JSON, e.g. `{"kind": ...}` after a `---`).
    Yaml,
    /// A value of a JSON stream at the start of the input.
    Json,
}

/// One document of the stream.
#[derive(Clone, Debug)]
pub struct Document<'a> {
    /// Bytes before the document that belong to none: `---` lines, spaces between JSON values.
    pub before: &'a str,
    /// The document's own bytes, exactly as in the input.
    pub text: &'a str,
    pub syntax: Syntax,
    /// File line (1-based) of the first line of `text`.
    pub line: usize,
    /// The value kubectl reads; `None` when it skips the document (empty or `null`).
    pub node: Option<Node>,
    /// For YAML: byte ranges of `text` before and after the lines holding content (comments,
    /// blank lines, an explicit `---` after a byte-order mark, text after `...`).
    pub lead: usize,
    pub trail: usize,
}

/// Why the stream cannot be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct StreamError {
    pub mark: Mark,
    pub message: String,
}

impl From<ReadError> for StreamError {
    fn from(e: ReadError) -> Self {
        Self {
            mark: e.mark,
            message: e.message,
        }
    }
}

/// The documents of a stream; their `before` and `text` concatenated, then `tail`, are the input.
#[derive(Clone, Debug)]
pub struct Stream<'a> {
    pub documents: Vec<Document<'a>>,
    pub tail: &'a str,
}

/// How far kubectl looks for the `{` of a JSON stream.
const JSON_PEEK: usize = 4096;

/// Splits and reads a manifest stream as kubectl does.
pub fn read_stream(input: &str) -> Result<Stream<'_>, StreamError> {
    let mut documents = Vec::new();
    let mut pos = 0;
    // Where the bytes not yet given to a document start (spaces kubectl skips stay in them).
    let mut kept = 0;
    let mut lines = LineCounter::default();
    if looks_like_json(input) {
        let mut count = 0;
        loop {
            let start = pos + json_space(&input[pos..]);
            if start == input.len() {
                return Ok(Stream {
                    documents,
                    tail: &input[pos..],
                });
            }
            let line = lines.line_at(input, start);
            match json_value(&input[start..], line) {
                Ok((len, node)) => {
                    documents.push(Document {
                        before: &input[pos..start],
                        text: &input[start..start + len],
                        syntax: Syntax::Json,
                        line,
                        node,
                        lead: 0,
                        trail: 0,
                    });
                    count += 1;
                    pos = start + len;
                }
                Err(message) if count > 1 => {
                    return Err(StreamError {
                        mark: Mark { line, column: 1 },
                        message: format!("not a JSON value after two JSON documents: {message}"),
                    });
                }
                Err(_) => {
                    // kubectl goes on with YAML from here, after spaces up to the first line break.
                    kept = pos;
                    pos += yaml_restart(&input[pos..]);
                    break;
                }
            }
        }
    }
    let (mut yaml_docs, tail) = split_yaml(input, kept, pos, &mut lines)?;
    documents.append(&mut yaml_docs);
    Ok(Stream { documents, tail })
}

fn looks_like_json(input: &str) -> bool {
    let mut end = input.len().min(JSON_PEEK);
    while !input.is_char_boundary(end) {
        end -= 1;
    }
    input[..end].trim_start().starts_with('{')
}

/// Bytes of JSON whitespace at the start.
fn json_space(s: &str) -> usize {
    s.len() - s.trim_start_matches([' ', '\t', '\r', '\n']).len()
}

/// One JSON value at the start of `s`: its length and value (`None` for `null`).
fn json_value(s: &str, line: usize) -> Result<(usize, Option<Node>), String> {
    let mut values = serde_json::Deserializer::from_str(s).into_iter::<&serde_json::value::RawValue>();
    match values.next() {
        Some(Ok(raw)) => {
            let len = values.byte_offset();
            let node = Node::from_json(raw.get(), Mark { line, column: 1 }).map_err(|e| e.to_string())?;
            Ok((len, (node.value != super::value::Value::Null).then_some(node)))
        }
        Some(Err(e)) => Err(e.to_string()),
        None => Err("no value".to_owned()),
    }
}

/// apimachinery's `consumeWhitespace`: spaces up to and including the first line break.
fn yaml_restart(s: &str) -> usize {
    let mut n = 0;
    for c in s.chars() {
        if !c.is_whitespace() {
            break;
        }
        n += c.len_utf8();
        if c == '\n' {
            break;
        }
    }
    n
}

/// The 1-based line of byte positions of one text, counted incrementally (each call counts
/// only the bytes since the last one, so a pass over a stream stays linear).
#[derive(Default)]
pub struct LineCounter {
    pos: usize,
    line: usize,
}

impl LineCounter {
    /// The line of `pos` in `text` (a position before the last one asked starts over).
    pub fn line_at(&mut self, text: &str, pos: usize) -> usize {
        if pos < self.pos {
            self.pos = 0;
            self.line = 0;
        }
        self.line += text.as_bytes()[self.pos..pos]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        self.pos = pos;
        self.line + 1
    }
}

/// apimachinery's `YAMLReader` from `start`.
fn split_yaml<'a>(
    input: &'a str,
    kept: usize,
    start: usize,
    lines: &mut LineCounter,
) -> Result<(Vec<Document<'a>>, &'a str), StreamError> {
    let mut documents = Vec::new();
    let mut chunk = String::new();
    let mut before_start = kept; // start of the bytes before the current chunk
    let mut chunk_start = start;
    let mut pos = start;
    let mut line = lines.line_at(input, start);
    let mut chunk_line = line;
    let flush = |chunk: &mut String,
                 documents: &mut Vec<Document<'a>>,
                 before: &'a str,
                 text: &'a str,
                 chunk_line: usize|
     -> Result<(), StreamError> {
        let read = read_document(chunk, chunk_line)?;
        let (node, lead, trail) = match read {
            Some(doc) => {
                let (first, last) = doc.content_lines;
                let lead = line_offset(text, first);
                let trail = text.len() - line_offset(text, last + 1);
                let lead = keep_bom(text, lead);
                (
                    Some(doc.node).filter(|n| n.value != super::value::Value::Null),
                    lead,
                    trail,
                )
            }
            None => (None, 0, 0),
        };
        documents.push(Document {
            before,
            text,
            syntax: Syntax::Yaml,
            line: chunk_line,
            node,
            lead,
            trail,
        });
        chunk.clear();
        Ok(())
    };
    while pos < input.len() {
        let end = input[pos..].find('\n').map_or(input.len(), |i| pos + i + 1);
        let raw = &input[pos..end];
        let content = match raw.strip_suffix('\n') {
            Some(l) => l.strip_suffix('\r').unwrap_or(l),
            None => raw,
        };
        if let Some(rest) = content.strip_prefix("---") {
            let rest = rest.trim();
            if !rest.is_empty() && !rest.starts_with('#') {
                return Err(StreamError {
                    mark: Mark { line, column: 4 },
                    message: format!(
                        "a line starting with --- separates documents and may hold only a comment after it, not {rest:?} (kubectl: invalid Yaml document separator)"
                    ),
                });
            }
            if !chunk.is_empty() {
                flush(
                    &mut chunk,
                    &mut documents,
                    &input[before_start..chunk_start],
                    &input[chunk_start..pos],
                    chunk_line,
                )?;
                before_start = pos;
            }
            chunk_start = end;
            chunk_line = line + 1;
        } else {
            chunk.push_str(content);
            chunk.push('\n');
        }
        pos = end;
        line += 1;
    }
    if !chunk.is_empty() {
        flush(
            &mut chunk,
            &mut documents,
            &input[before_start..chunk_start],
            &input[chunk_start..],
            chunk_line,
        )?;
        before_start = input.len();
    }
    Ok((documents, &input[before_start..]))
}

/// Byte offset of the start of 0-based line `n` of `text` (its length past the last line).
fn line_offset(text: &str, n: usize) -> usize {
    if n == 0 {
        return 0;
    }
    text.match_indices('\n')
        .nth(n - 1)
        .map_or(text.len(), |(i, _)| i + 1)
}

/// A byte-order mark before the content is kept with the lead (libyaml reads past it without
/// moving its marks, so the content may seem to start at the very first byte).
fn keep_bom(text: &str, lead: usize) -> usize {
    if lead == 0 && text.starts_with('\u{feff}') {
        '\u{feff}'.len_utf8()
    } else {
        lead
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubeyaml::value::Value;

    fn texts(input: &str) -> Vec<(String, String, bool)> {
        let stream = read_stream(input).unwrap();
        let mut joined = String::new();
        let mut out = Vec::new();
        for d in &stream.documents {
            joined.push_str(d.before);
            joined.push_str(d.text);
            out.push((d.before.to_owned(), d.text.to_owned(), d.node.is_some()));
        }
        joined.push_str(stream.tail);
        assert_eq!(joined, input, "every byte is kept");
        out
    }

    #[test]
    fn splits_like_the_yaml_reader() {
        assert_eq!(texts(""), vec![]);
        assert_eq!(texts("a: 1"), vec![(String::new(), "a: 1".into(), true)]);
        assert_eq!(
            texts("---\na: 1\n---\n---\n# c\n--- # x\nb: 2\n"),
            vec![
                ("---\n".into(), "a: 1\n".into(), true),
                ("---\n---\n".into(), "# c\n".into(), false),
                ("--- # x\n".into(), "b: 2\n".into(), true),
            ]
        );
        assert_eq!(texts("a: |\n  --- x\n").len(), 1);
        assert_eq!(texts("a: 1\r\n---\r\nb: 2\r\n").len(), 2);
        assert_eq!(texts("a: 1\n---\n").len(), 1);
        assert_eq!(texts("null\n---\n~\n").iter().filter(|d| d.2).count(), 0);
    }

    #[test]
    fn separator_with_content_is_refused() {
        let e = read_stream("a: 1\n--- |\n  x\n").unwrap_err();
        assert_eq!(e.mark.line, 2);
        assert!(e.message.contains("\"|\""), "{}", e.message);
        let e = read_stream("a: 1\n----\n").unwrap_err();
        assert_eq!(e.mark.line, 2);
    }

    #[test]
    fn json_stream_then_yaml() {
        let docs = texts("{\"a\": 1} {\"b\": 2}\n");
        assert_eq!(docs.len(), 2);
        let docs = texts("{\"a\": 1}\n---\nb: 2\n");
        assert_eq!(docs.len(), 2);
        let stream = read_stream("{\"a\": 1}\n---\nb: 2\n").unwrap();
        assert_eq!(stream.documents[0].syntax, Syntax::Json);
        assert_eq!(stream.documents[1].syntax, Syntax::Yaml);
        assert_eq!(stream.documents[1].line, 3);
        // A flow mapping that is not JSON: YAML from the start.
        let stream = read_stream("{a: 1}\n").unwrap();
        assert_eq!(stream.documents[0].syntax, Syntax::Yaml);
        // After two JSON values, more must be JSON.
        assert!(read_stream("{\"a\": 1}\n{\"b\": 2}\n---\nc: 1\n").is_err());
    }

    #[test]
    fn bom_and_lead_and_trail() {
        let input = "\u{feff}# c\na: 1 # x\n# after\n...\nignored: [\n";
        let stream = read_stream(input).unwrap();
        let d = &stream.documents[0];
        assert_eq!(&d.text[..d.lead], "\u{feff}# c\n");
        assert_eq!(&d.text[d.text.len() - d.trail..], "# after\n...\nignored: [\n");
        assert_eq!(d.node.as_ref().unwrap().get("a").unwrap().value, Value::Int(1));
        let stream = read_stream("\u{feff}a: 1\n").unwrap();
        assert_eq!(stream.documents[0].lead, 3);
        let stream = read_stream("a: |\n  x\n# c\n").unwrap();
        let d = &stream.documents[0];
        assert_eq!(&d.text[d.text.len() - d.trail..], "# c\n");
    }
}
