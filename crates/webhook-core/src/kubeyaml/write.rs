//! Writes a [`Node`] as YAML that every YAML reader takes the same way, or as JSON.
//!
//! Block style with two-space indentation and lists not indented under their key (as kubectl
//! prints). Strings are plain only when no YAML 1.1 or 1.2 reader could take them for anything
//! else ([`may_read_as_non_string`]) and they hold no character with a meaning in YAML;
//! otherwise single-quoted, or double-quoted with escapes when they hold line breaks, tabs or
//! characters that are not printable. Multi-line strings that start with a visible character
//! are literal blocks (`|`, `|-`). Numbers are written in decimal (floats always with a `.`
//! and a signed exponent, which both YAML versions read as a float); `null`, `true`, `false`.

use inject_api::yaml::{printable, push_double_quoted};

use super::{
    resolve::may_read_as_non_string,
    value::{Map, Node, Value},
};

/// Longest key (in characters) written as a simple `key: value`; libyaml needs the `:` within
/// 1024 characters of the key's start. Longer keys use the explicit `? key` form.
const SIMPLE_KEY_MAX: usize = 1000;

/// `node` as a YAML document (no `---`), with `\r\n` line breaks when `crlf`.
pub fn to_yaml(node: &Node, crlf: bool) -> String {
    let mut w = Writer {
        out: String::new(),
        nl: if crlf { "\r\n" } else { "\n" },
    };
    match &node.value {
        Value::Map(map) if !map.is_empty() => w.map(map, 0, false),
        Value::Seq(items) if !items.is_empty() => w.seq(items, 0, false),
        _ => {
            w.inline(node);
            w.newline();
        }
    }
    w.out
}

/// `node` as pretty JSON (two spaces) and a final line break. Characters YAML does not take
/// as they are (DEL, C1 controls, the YAML 1.1 line breaks NEL, LS and PS, the byte-order mark)
/// are escaped, so the text reads the same as a YAML document.
pub fn to_json(node: &Node, crlf: bool) -> String {
    let json = serde_json::to_string_pretty(node).unwrap_or_default();
    let mut text = String::with_capacity(json.len() + 1);
    for c in json.chars() {
        match c {
            '\n' if crlf => text.push_str("\r\n"),
            // Outside strings serde_json writes only ASCII; these occur inside strings only.
            c if (c.is_ascii() && c != '\x7f') || printable(c) => text.push(c),
            c => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    text.push_str(&format!("\\u{unit:04x}"));
                }
            }
        }
    }
    text.push_str(if crlf { "\r\n" } else { "\n" });
    text
}

struct Writer {
    out: String,
    nl: &'static str,
}

impl Writer {
    fn newline(&mut self) {
        self.out.push_str(self.nl);
    }

    fn indent(&mut self, n: usize) {
        self.out.extend(std::iter::repeat_n(' ', n));
    }

    /// Entries at `indent`; the first one's indentation is already written when `inline`.
    fn map(&mut self, map: &Map, indent: usize, inline: bool) {
        for (i, (key, entry)) in map.iter().enumerate() {
            if i > 0 || !inline {
                self.indent(indent);
            }
            let key_text = scalar_text(key);
            if key_text.chars().count() > SIMPLE_KEY_MAX {
                self.out.push_str("? ");
                self.out.push_str(&key_text);
                self.newline();
                self.indent(indent);
                self.out.push(':');
                self.value(&entry.node, indent, false);
            } else {
                self.out.push_str(&key_text);
                self.out.push(':');
                self.value(&entry.node, indent, true);
            }
        }
    }

    /// Items at `indent`; the first one's indentation is already written when `inline`.
    fn seq(&mut self, items: &[Node], indent: usize, inline: bool) {
        for (i, item) in items.iter().enumerate() {
            if i > 0 || !inline {
                self.indent(indent);
            }
            self.out.push('-');
            match &item.value {
                Value::Map(map) if !map.is_empty() => {
                    self.out.push(' ');
                    self.map(map, indent + 2, true);
                }
                Value::Seq(inner) if !inner.is_empty() => {
                    self.out.push(' ');
                    self.seq(inner, indent + 2, true);
                }
                _ => self.scalar_after_indicator(item, indent),
            }
        }
    }

    /// The value of a key whose `key:` is written at `indent`.
    fn value(&mut self, node: &Node, indent: usize, indentless_seq: bool) {
        match &node.value {
            Value::Map(map) if !map.is_empty() => {
                self.newline();
                self.map(map, indent + 2, false);
            }
            Value::Seq(items) if !items.is_empty() => {
                self.newline();
                self.seq(items, if indentless_seq { indent } else { indent + 2 }, false);
            }
            _ => self.scalar_after_indicator(node, indent),
        }
    }

    /// A scalar (or empty collection) after `key:` or `-` at `indent`.
    fn scalar_after_indicator(&mut self, node: &Node, indent: usize) {
        if let Value::String(s) = &node.value
            && let Some((header, body)) = literal_block(s)
        {
            self.out.push(' ');
            self.out.push_str(header);
            self.newline();
            for line in body.split('\n') {
                if !line.is_empty() {
                    self.indent(indent + 2);
                    self.out.push_str(line);
                }
                self.newline();
            }
            return;
        }
        self.out.push(' ');
        self.inline(node);
        self.newline();
    }

    fn inline(&mut self, node: &Node) {
        match &node.value {
            Value::Null => self.out.push_str("null"),
            Value::Bool(b) => self.out.push_str(if *b { "true" } else { "false" }),
            Value::Int(i) => self.out.push_str(&i.to_string()),
            Value::UInt(u) => self.out.push_str(&u.to_string()),
            Value::Float(f) => self.out.push_str(&float_text(*f)),
            Value::String(s) => self.out.push_str(&scalar_text(s)),
            Value::Seq(_) => self.out.push_str("[]"),
            Value::Map(_) => self.out.push_str("{}"),
        }
    }
}

/// A float both YAML versions read as a float: a `.` in the mantissa and a signed exponent.
fn float_text(f: f64) -> String {
    let text = format!("{f:?}");
    match text.split_once('e') {
        None => text,
        Some((mantissa, exp)) => {
            let mantissa = if mantissa.contains('.') {
                mantissa.to_owned()
            } else {
                format!("{mantissa}.0")
            };
            let exp = if exp.starts_with('-') {
                exp.to_owned()
            } else {
                format!("+{exp}")
            };
            format!("{mantissa}e{exp}")
        }
    }
}

/// The header and body of a literal block for `s`, when one reads back exactly: a multi-line
/// string whose first character is visible, with no carriage return, other YAML line break or
/// unprintable character, and at most one final line break (`|` keeps one, `|-` none).
fn literal_block(s: &str) -> Option<(&'static str, &str)> {
    if !s.contains('\n') || s.starts_with([' ', '\t', '\n']) {
        return None;
    }
    if !s.chars().all(|c| c == '\n' || c == '\t' || printable(c)) {
        return None;
    }
    match s.strip_suffix('\n') {
        Some(body) if body.ends_with('\n') => None,
        Some(body) => Some(("|", body)),
        None => Some(("|-", s)),
    }
}

/// Whether `s` can be written without quotes and read back as the same string by any reader.
pub fn plain_safe(s: &str) -> bool {
    let Some(first) = s.chars().next() else {
        return false;
    };
    if first.is_whitespace() {
        return false;
    }
    // A `-` starts a plain scalar when something other than a space follows (`-c`, `--root`).
    let dash_ok = first == '-' && s[1..].chars().next().is_some_and(|c| c != ' ');
    if may_read_as_non_string(s)
        || ("-?:,[]{}#&*!|>'\"%@`".contains(first) && !dash_ok)
        || s.ends_with([' ', ':'])
        || s.contains(": ")
        || s.contains(" #")
        || s.starts_with("---")
        || s.starts_with("...")
    {
        return false;
    }
    s.chars().all(printable)
}

/// A string as a scalar: plain, single-quoted or double-quoted.
fn scalar_text(s: &str) -> String {
    if plain_safe(s) {
        return s.to_owned();
    }
    if s.chars().all(printable) {
        return format!("'{}'", s.replace('\'', "''"));
    }
    let mut out = String::new();
    push_double_quoted(&mut out, s);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubeyaml::value::Mark;

    fn s(text: &str) -> String {
        scalar_text(text)
    }

    #[test]
    fn strings_that_read_as_something_else_are_quoted() {
        for t in [
            "no",
            "yes",
            "on",
            "off",
            "y",
            "n",
            "~",
            "null",
            "0400",
            "1_000",
            "1:30",
            "2024-01-01",
            ".inf",
            "<<",
        ] {
            assert_eq!(s(t), format!("'{t}'"));
        }
        assert_eq!(s(""), "''");
        assert_eq!(s("it's"), "it's");
        assert_eq!(s("- it's"), "'- it''s'");
        assert_eq!(s("-c"), "-c");
        assert_eq!(s("--root"), "--root");
        assert_eq!(s("---"), "'---'");
        assert_eq!(s("--- a"), "'--- a'");
        assert_eq!(s("-1"), "'-1'");
        assert_eq!(s("16Mi"), "16Mi");
        assert_eq!(s("a\tb"), "\"a\\tb\"");
        assert_eq!(s("\u{85}"), "\"\\u0085\"");
        assert_eq!(s("nginx:1.25"), "nginx:1.25");
        assert_eq!(s("a: b"), "'a: b'");
        assert_eq!(s("a #b"), "'a #b'");
    }

    #[test]
    fn floats_carry_a_dot_and_a_signed_exponent() {
        assert_eq!(float_text(1.0), "1.0");
        assert_eq!(float_text(0.5), "0.5");
        assert_eq!(float_text(1e300), "1.0e+300");
        assert_eq!(float_text(1.5e-7), "1.5e-7");
    }

    #[test]
    fn block_style() {
        let node = Node::from_json(
            r#"{"a": {"b": [1, {"c": "x", "d": []}, ["y"]], "e": {}}, "s": "line 1\nline 2\n", "t": "x\n"}"#,
            Mark::NONE,
        )
        .unwrap();
        assert_eq!(
            to_yaml(&node, false),
            "a:\n  b:\n  - 1\n  - c: x\n    d: []\n  - - 'y'\n  e: {}\ns: |\n  line 1\n  line 2\nt: |\n  x\n"
        );
        assert!(to_yaml(&node, true).contains("a:\r\n  b:\r\n"));
    }
}
