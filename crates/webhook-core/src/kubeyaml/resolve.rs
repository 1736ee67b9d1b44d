//! Plain scalars the way Kubernetes reads them (go-yaml v2's `resolve`, YAML 1.1 rules), and
//! the test the writer applies before it writes a string without quotes.
//!
//! go-yaml v2 (`go.yaml.in/yaml/v2`, the parser under `sigs.k8s.io/yaml`) looks at the first
//! byte of a plain scalar: `y`/`n`/`t`/`f`/`o`/`~` are looked up in a table of booleans and
//! nulls (`yes`, `No`, `on`, `OFF`, `y`, `~`, ...), a sign or a digit is tried as a timestamp,
//! an integer (`0x`, `0o`, `0b` and leading-zero octal prefixes, `_` ignored), then a float, and
//! `.` starts a float (`.5`, `.inf`, `.nan`). Anything else is a string. Timestamps stay
//! strings (decoding into `interface{}` keeps their text).

/// Long forms of the tags go-yaml v2 knows.
pub const STR_TAG: &str = "tag:yaml.org,2002:str";
pub const BOOL_TAG: &str = "tag:yaml.org,2002:bool";
pub const INT_TAG: &str = "tag:yaml.org,2002:int";
pub const FLOAT_TAG: &str = "tag:yaml.org,2002:float";
pub const NULL_TAG: &str = "tag:yaml.org,2002:null";
pub const TIMESTAMP_TAG: &str = "tag:yaml.org,2002:timestamp";
pub const BINARY_TAG: &str = "tag:yaml.org,2002:binary";
pub const MERGE_TAG: &str = "tag:yaml.org,2002:merge";

/// What a scalar resolves to.
#[derive(Clone, Debug, PartialEq)]
pub enum Scalar {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    /// A string: the scalar's own text.
    Str,
    /// Looks like a timestamp: kept as the scalar's text.
    Timestamp,
}

/// `!!int` for `tag:yaml.org,2002:int`, as go-yaml's messages print tags.
fn short_tag(tag: &str) -> String {
    match tag.strip_prefix("tag:yaml.org,2002:") {
        Some(rest) => format!("!!{rest}"),
        None => tag.to_owned(),
    }
}

fn tag_of(scalar: &Scalar) -> &'static str {
    match scalar {
        Scalar::Null => NULL_TAG,
        Scalar::Bool(_) => BOOL_TAG,
        Scalar::Int(_) | Scalar::UInt(_) => INT_TAG,
        Scalar::Float(_) => FLOAT_TAG,
        Scalar::Str => STR_TAG,
        Scalar::Timestamp => TIMESTAMP_TAG,
    }
}

/// Resolves a scalar with an explicit `tag` (long form, empty for none) as go-yaml v2 does,
/// including its refusals (`!!int abc`). A tag it does not know (`!foo`, `!!binary`) leaves
/// the text a string; the caller handles `!!binary`.
pub fn resolve(tag: &str, text: &str) -> Result<Scalar, String> {
    if !matches!(
        tag,
        "" | STR_TAG | BOOL_TAG | INT_TAG | FLOAT_TAG | NULL_TAG | TIMESTAMP_TAG
    ) {
        return Ok(Scalar::Str);
    }
    let resolved = resolve_untagged(tag, text);
    if tag.is_empty() || tag == STR_TAG || tag == tag_of(&resolved) {
        return Ok(resolved);
    }
    match (tag, &resolved) {
        (FLOAT_TAG, Scalar::Int(i)) => Ok(Scalar::Float(*i as f64)),
        _ => Err(format!(
            "cannot decode {} `{text}` as a {}",
            short_tag(tag_of(&resolved)),
            short_tag(tag)
        )),
    }
}

fn resolve_untagged(tag: &str, text: &str) -> Scalar {
    let hint = match text.as_bytes().first() {
        None => b'N',
        Some(b'+' | b'-') => b'S',
        Some(b'0'..=b'9') => b'D',
        Some(b'y' | b'Y' | b'n' | b'N' | b't' | b'T' | b'f' | b'F' | b'o' | b'O' | b'~') => b'M',
        Some(b'.') => b'.',
        Some(_) => return Scalar::Str,
    };
    if tag == STR_TAG {
        return Scalar::Str;
    }
    if let Some(known) = lookup(text) {
        return known;
    }
    match hint {
        b'.' => match go_parse_float(text) {
            Some(f) => Scalar::Float(f),
            None => Scalar::Str,
        },
        b'D' | b'S' => {
            if (tag.is_empty() || tag == TIMESTAMP_TAG) && is_timestamp(text) {
                return Scalar::Timestamp;
            }
            let plain: String = text.chars().filter(|&c| c != '_').collect();
            if let Some(i) = go_parse_int(&plain, 0) {
                return Scalar::Int(i);
            }
            if let Some(u) = go_parse_uint(&plain, 0) {
                return Scalar::UInt(u);
            }
            if is_yaml_style_float(&plain)
                && let Some(f) = go_parse_float(&plain)
            {
                return Scalar::Float(f);
            }
            // go-yaml's own binary fallback: "0b" then Go's base-2 syntax, which takes a sign.
            if let Some(rest) = plain.strip_prefix("0b") {
                if let Some(i) = go_parse_int(rest, 2) {
                    return Scalar::Int(i);
                }
                if let Some(u) = go_parse_uint(rest, 2) {
                    return Scalar::UInt(u);
                }
            } else if let Some(rest) = plain.strip_prefix("-0b")
                && let Some(i) = go_parse_int(&format!("-{rest}"), 2)
            {
                return Scalar::Int(i);
            }
            Scalar::Str
        }
        _ => Scalar::Str,
    }
}

/// go-yaml v2's table of booleans, nulls and special floats (exact spellings only).
fn lookup(text: &str) -> Option<Scalar> {
    Some(match text {
        "y" | "Y" | "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => {
            Scalar::Bool(true)
        }
        "n" | "N" | "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => {
            Scalar::Bool(false)
        }
        "" | "~" | "null" | "Null" | "NULL" => Scalar::Null,
        ".nan" | ".NaN" | ".NAN" => Scalar::Float(f64::NAN),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => Scalar::Float(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => Scalar::Float(f64::NEG_INFINITY),
        _ => return None,
    })
}

/// `^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$`
fn is_yaml_style_float(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    if matches!(b.first(), Some(b'+' | b'-')) {
        i += 1;
    }
    let digits = |i: &mut usize| {
        let start = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        *i - start
    };
    if b.get(i) == Some(&b'.') {
        i += 1;
        if digits(&mut i) == 0 {
            return false;
        }
    } else {
        if digits(&mut i) == 0 {
            return false;
        }
        if b.get(i) == Some(&b'.') {
            i += 1;
            digits(&mut i);
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return false;
        }
    }
    i == b.len()
}

/// Go's `strconv.ParseFloat(s, 64)` for decimal text (the only form that reaches it here):
/// finite results only (an overflow is an error in Go).
fn go_parse_float(s: &str) -> Option<f64> {
    let body = s.strip_prefix(['+', '-']).unwrap_or(s);
    // Go also takes "inf"/"nan" words and hex floats; neither can start with a digit or a dot
    // and still reach here except "0x..." hex floats, which go-yaml never passes (the regex or
    // the '.' hint rule them out).
    if body.is_empty()
        || !body
            .bytes()
            .all(|c| c.is_ascii_digit() || matches!(c, b'.' | b'e' | b'E' | b'+' | b'-'))
    {
        return None;
    }
    let f: f64 = s.parse().ok()?;
    f.is_finite().then_some(f)
}

/// Go's `strconv.ParseUint(s, base, 64)` for base 0 (prefixes `0x`, `0o`, `0b`, leading `0`
/// for octal) or an explicit base. No sign, no underscores (the caller removed them).
fn go_parse_uint(s: &str, base: u32) -> Option<u64> {
    let (digits, radix) = if base == 0 {
        let lower = s.get(..2).map(str::to_ascii_lowercase);
        match lower.as_deref() {
            Some("0x") => (&s[2..], 16),
            Some("0o") => (&s[2..], 8),
            Some("0b") => (&s[2..], 2),
            _ if s.len() > 1 && s.starts_with('0') => (&s[1..], 8),
            _ => (s, 10),
        }
    } else {
        (s, base)
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    u64::from_str_radix(digits, radix).ok()
}

/// Go's `strconv.ParseInt(s, base, 64)`: an optional sign, then [`go_parse_uint`].
fn go_parse_int(s: &str, base: u32) -> Option<i64> {
    let (negative, body) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let magnitude = go_parse_uint(body, base)?;
    if negative {
        0i64.checked_sub_unsigned(magnitude)
    } else {
        i64::try_from(magnitude).ok()
    }
}

/// go-yaml v2's `parseTimestamp`: four digits and `-`, then one of the layouts
/// `2006-1-2T15:4:5.999999999Z07:00` (also with `t`), `2006-1-2 15:4:5.999999999`, `2006-1-2`
/// as Go's `time.Parse` reads them.
pub fn is_timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() < 5 || !b[..4].iter().all(u8::is_ascii_digit) || b[4] != b'-' {
        return false;
    }
    let mut p = Cursor { b, i: 5 };
    let Some(month) = p.number(1, 2) else {
        return false;
    };
    if !p.eat(b'-') {
        return false;
    }
    let Some(day) = p.number(1, 2) else {
        return false;
    };
    let year: u32 = s[..4].parse().unwrap_or(0);
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return false;
    }
    if p.done() {
        return true;
    }
    let zoned = match p.next() {
        Some(b'T' | b't') => true,
        Some(b' ') => false,
        _ => return false,
    };
    let (Some(hour), true, Some(minute), true, Some(second)) = (
        p.number(1, 2),
        p.eat(b':'),
        p.number(1, 2),
        p.eat(b':'),
        p.number(1, 2),
    ) else {
        return false;
    };
    if hour > 23 || minute > 59 || second > 59 {
        return false;
    }
    // Fractional seconds: Go accepts them after the seconds even when the layout has none.
    if p.peek() == Some(b'.') && p.peek_at(1).is_some_and(|c| c.is_ascii_digit()) {
        p.i += 1;
        while p.peek().is_some_and(|c| c.is_ascii_digit()) {
            p.i += 1;
        }
    }
    if !zoned {
        return p.done();
    }
    match p.next() {
        Some(b'Z') => p.done(),
        Some(b'+' | b'-') => {
            let (Some(h), true, Some(m)) = (p.number(2, 2), p.eat(b':'), p.number(2, 2)) else {
                return false;
            };
            h <= 24 && m <= 59 && p.done()
        }
        _ => false,
    }
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400)) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }
    fn peek_at(&self, n: usize) -> Option<u8> {
        self.b.get(self.i + n).copied()
    }
    fn next(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.i += 1;
        Some(c)
    }
    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn done(&self) -> bool {
        self.i == self.b.len()
    }
    /// `min..=max` digits.
    fn number(&mut self, min: usize, max: usize) -> Option<u32> {
        let start = self.i;
        while self.i - start < max && self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.i += 1;
        }
        if self.i - start < min {
            return None;
        }
        std::str::from_utf8(&self.b[start..self.i]).ok()?.parse().ok()
    }
}

/// Whether some YAML reader could take this text, written plain, for something other than a
/// string. A superset of YAML 1.1's and 1.2's resolvers and go-yaml v2's: booleans and nulls in
/// any letter case (`yes`, `Off`, `y`, `~`, `NULL`), `.inf`/`.nan`, the merge key `<<`, YAML 1.1's
/// `=`, and every text that starts like a number (a digit, or a sign or dot then a digit or dot)
/// and holds only characters a number or timestamp can hold (`0400`, `0x1F`, `1_000`, `1:30`,
/// `1e3`, `2024-01-01 10:00:00 -5`). `16Mi`, `5m` or `1h` hold other letters and stay plain.
pub fn may_read_as_non_string(text: &str) -> bool {
    const WORDS: [&str; 11] = [
        "y", "n", "yes", "no", "true", "false", "on", "off", "null", "~", "",
    ];
    if WORDS.iter().any(|w| text.eq_ignore_ascii_case(w)) || text == "<<" || text == "=" {
        return true;
    }
    let unsigned = text.trim_start_matches(['+', '-']);
    if unsigned.eq_ignore_ascii_case(".inf") || unsigned.eq_ignore_ascii_case(".nan") {
        return true;
    }
    let b = text.as_bytes();
    let starts_like_a_number = match b[0] {
        b'0'..=b'9' => true,
        b'+' | b'-' | b'.' => b.get(1).is_none_or(|c| c.is_ascii_digit() || *c == b'.'),
        _ => false,
    };
    starts_like_a_number
        && b.iter().all(|c| {
            c.is_ascii_hexdigit()
                || matches!(
                    c,
                    b'_' | b'.'
                        | b':'
                        | b'+'
                        | b'-'
                        | b' '
                        | b'x'
                        | b'X'
                        | b'o'
                        | b'O'
                        | b't'
                        | b'T'
                        | b'z'
                        | b'Z'
                )
        })
}

/// Go's `strconv.FormatFloat(f, 'g', -1, 32)`, which `sigs.k8s.io/yaml` uses for a float map
/// key, with its spellings of the infinities and NaN.
pub fn go_float_key(f: f64) -> String {
    if f.is_nan() {
        return ".nan".to_owned();
    }
    #[allow(clippy::cast_possible_truncation)] // exactly Go's float32(f)
    let x = f as f32;
    if x.is_infinite() {
        return if x > 0.0 { ".inf" } else { "-.inf" }.to_owned();
    }
    // Shortest digits that read back as the same float32, and the decimal exponent.
    let sci = format!("{:e}", x.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let exp: i32 = exp.parse().unwrap_or(0);
    let sign = if x.is_sign_negative() { "-" } else { "" };
    if digits == "0" {
        return format!("{sign}0");
    }
    if !(-4..6).contains(&exp) {
        let rest = &digits[1..];
        let dot = if rest.is_empty() { "" } else { "." };
        let esign = if exp < 0 { '-' } else { '+' };
        return format!("{sign}{}{dot}{rest}e{esign}{:02}", &digits[..1], exp.abs());
    }
    let point = exp + 1; // digits before the decimal point
    if point <= 0 {
        let zeros = "0".repeat(usize::try_from(-point).unwrap_or(0));
        format!("{sign}0.{zeros}{digits}")
    } else {
        let point = usize::try_from(point).unwrap_or(0);
        if digits.len() <= point {
            format!("{sign}{digits}{}", "0".repeat(point - digits.len()))
        } else {
            format!("{sign}{}.{}", &digits[..point], &digits[point..])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(text: &str) -> Scalar {
        resolve("", text).unwrap()
    }

    #[test]
    fn yaml_1_1_booleans_and_nulls() {
        for t in [
            "y", "Y", "yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON",
        ] {
            assert_eq!(r(t), Scalar::Bool(true), "{t}");
        }
        for t in [
            "n", "N", "no", "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF",
        ] {
            assert_eq!(r(t), Scalar::Bool(false), "{t}");
        }
        for t in ["", "~", "null", "Null", "NULL"] {
            assert_eq!(r(t), Scalar::Null, "{t}");
        }
        for t in ["yEs", "nO", "oN", "NuLL", "tRUE", "<<", "="] {
            assert_eq!(r(t), Scalar::Str, "{t}");
        }
    }

    #[test]
    fn numbers() {
        assert_eq!(r("0400"), Scalar::Int(256));
        assert_eq!(r("0o17"), Scalar::Int(15));
        assert_eq!(r("0x1F"), Scalar::Int(31));
        assert_eq!(r("-0x1F"), Scalar::Int(-31));
        assert_eq!(r("0b101"), Scalar::Int(5));
        assert_eq!(r("0b-101"), Scalar::Int(-5));
        assert_eq!(r("1_000"), Scalar::Int(1000));
        assert_eq!(r("+12"), Scalar::Int(12));
        assert_eq!(r("08"), Scalar::Float(8.0));
        assert_eq!(r("1e3"), Scalar::Float(1000.0));
        assert_eq!(r(".5"), Scalar::Float(0.5));
        assert_eq!(r("18446744073709551615"), Scalar::UInt(u64::MAX));
        assert_eq!(r("18446744073709551616"), Scalar::Float(18446744073709551616.0));
        assert_eq!(r("1e400"), Scalar::Str);
        assert_eq!(r("0x"), Scalar::Str);
        assert_eq!(r("1:30"), Scalar::Str, "no sexagesimal in go-yaml v2");
        assert!(matches!(r(".inf"), Scalar::Float(f) if f == f64::INFINITY));
        assert!(matches!(r(".NaN"), Scalar::Float(f) if f.is_nan()));
        assert_eq!(r(".foo"), Scalar::Str);
        assert_eq!(r("-"), Scalar::Str);
    }

    #[test]
    fn timestamps_stay_strings() {
        for t in [
            "2001-12-14",
            "2001-12-14t21:59:43.10-05:00",
            "2001-12-14 21:59:43.10",
            "2002-1-2T3:4:5Z",
        ] {
            assert!(is_timestamp(t), "{t}");
            assert_eq!(r(t), Scalar::Timestamp, "{t}");
        }
        for t in [
            "2001-13-14",
            "2001-02-30",
            "2001-12-14 21:59:43.10 -5",
            "20011-12-14",
        ] {
            assert!(!is_timestamp(t), "{t}");
        }
    }

    #[test]
    fn explicit_tags() {
        assert_eq!(resolve(INT_TAG, "12"), Ok(Scalar::Int(12)));
        assert_eq!(resolve(FLOAT_TAG, "1"), Ok(Scalar::Float(1.0)));
        assert_eq!(resolve(STR_TAG, "yes"), Ok(Scalar::Str));
        assert_eq!(resolve("!custom", "12"), Ok(Scalar::Str));
        assert_eq!(
            resolve(INT_TAG, "abc"),
            Err("cannot decode !!str `abc` as a !!int".to_owned())
        );
        assert!(resolve(BOOL_TAG, "1").is_err());
    }

    #[test]
    fn float_keys_as_go_prints_them() {
        for (f, s) in [
            (1.0, "1"),
            (1.5, "1.5"),
            (0.1, "0.1"),
            (1e6, "1e+06"),
            (123456.0, "123456"),
            (1234567.0, "1.234567e+06"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (-2.5, "-2.5"),
            (0.0, "0"),
            (1e39, ".inf"),
        ] {
            assert_eq!(go_float_key(f), s, "{f}");
        }
    }

    #[test]
    fn quoting_test_covers_both_yaml_versions() {
        for t in [
            "yes",
            "No",
            "ON",
            "y",
            "N",
            "~",
            "null",
            "NULL",
            "true",
            "0400",
            "0o17",
            "0x1F",
            "1_000",
            "1:30",
            "2024-01-01",
            ".inf",
            "-.inf",
            ".NaN",
            "+.5",
            "-1",
            "1e3",
            "<<",
            "=",
            "",
            "12",
            "3.0",
            "0X1f",
            "0B11",
            "0O17",
            "2001-12-14 21:59:43.10 -5",
            "2001-12-14t21:59:43.10Z",
            ".",
            "-",
            "+",
            "190:20:30",
            "1.",
        ] {
            assert!(may_read_as_non_string(t), "{t}");
        }
        for t in [
            "nginx",
            "a/b",
            "none",
            "yes-please",
            "offset",
            "v1.2",
            "-x",
            "x:1",
            "16Mi",
            "5m",
            "1h",
            "10s",
            "8080/TCP",
            ".git",
        ] {
            assert!(!may_read_as_non_string(t), "{t}");
        }
    }
}
