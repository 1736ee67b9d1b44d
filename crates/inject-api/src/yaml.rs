//! YAML double-quoted scalars: the one escaping rule of the two YAML writers, the webhook's
//! manifests (`ps-webhook inject`) and the agent's `yaml` output format, so that a value either
//! side writes reads back as the same string in any YAML 1.1 or 1.2 reader.

use std::fmt::Write as _;

/// Whether `c` may stand as itself inside any YAML scalar: YAML 1.2's printable set (which
/// also satisfies 1.1), without the line and paragraph separators and the byte-order mark,
/// which some readers treat as breaks.
pub fn printable(c: char) -> bool {
    matches!(c, ' '..='~' | '\u{A0}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
        && !matches!(c, '\u{2028}' | '\u{2029}' | '\u{FEFF}')
}

/// Appends `s` as a double-quoted scalar: `\" \\ \n \t \r`, printable characters as they are,
/// anything else as `\uXXXX` or `\UXXXXXXXX`.
pub fn push_double_quoted(out: &mut String, s: &str) {
    out.reserve(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if printable(c) => out.push(c),
            c if u32::from(c) <= 0xFFFF => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => {
                let _ = write!(out, "\\U{:08X}", u32::from(c));
            }
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quoted(s: &str) -> String {
        let mut out = String::new();
        push_double_quoted(&mut out, s);
        out
    }

    #[test]
    fn escapes_what_is_not_printable() {
        assert_eq!(
            quoted("a\"b\\c\nd\te\r\u{1}\u{7F}\u{85}\u{2028}\u{FEFF}\u{FFFE}é€😀"),
            r#""a\"b\\c\nd\te\r\u0001\u007F\u0085\u2028\uFEFF\uFFFEé€😀""#
        );
        assert_eq!(quoted(""), r#""""#);
    }

    #[test]
    fn the_printable_set_has_its_edges_where_yaml_puts_them() {
        for c in [
            ' ',
            '~',
            '\u{A0}',
            '\u{D7FF}',
            '\u{E000}',
            '\u{FFFD}',
            '\u{10000}',
            '\u{10FFFF}',
        ] {
            assert!(printable(c), "{c:?}");
        }
        for c in [
            '\u{0}', '\u{1F}', '\u{7F}', '\u{85}', '\u{9F}', '\u{2028}', '\u{2029}', '\u{FEFF}', '\u{FFFE}',
            '\u{FFFF}',
        ] {
            assert!(!printable(c), "{c:?}");
        }
    }
}
