//! Output formats: how an output's fields become the bytes of one file.
//!
//! Every output has a set of string fields ([`Fields`]); see `docs/agent.md` for the field model:
//! - secret output: `value` (password, text or file content), `title`, `username` (credential
//!   secrets), `fileName` (file secrets);
//! - managed-account output: `value` (the password), `system`, `account`;
//! - folder output: one field per secret, named by its title, holding its value.
//!
//! `raw` writes `value` as is (folders in raw format are directories, not rendered). The other
//! formats write every field. Nothing here logs, and no error message contains a value.

use std::{collections::BTreeMap, fmt::Write as _};

use inject_api::Format;
use minijinja::{Environment, ErrorKind, UndefinedBehavior, Value};

use crate::value::Sensitive;

/// An output's fields, sorted by name.
pub type Fields = BTreeMap<String, Sensitive>;

/// Why an output could not be rendered. Messages name fields, never values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("the value of field {0:?} is not UTF-8 text; only format raw can write binary values")]
    NotUtf8(String),
    #[error(
        "{0:?} is not a valid environment variable name for format dotenv (expected [A-Za-z_][A-Za-z0-9_]*)"
    )]
    BadEnvKey(String),
    #[error(
        "the value of field {0:?} contains the control character U+{1:04X}, which format dotenv cannot carry"
    )]
    DotenvControl(String, u32),
    #[error("there is no field \"value\" to write in format raw")]
    NoValue,
    #[error("template: {0}")]
    Template(String),
}

/// Instructions one render may execute: far above what a config-file template needs (a few
/// hundred per field), far below a runaway loop.
const TEMPLATE_FUEL: u64 = 2_000_000;

/// The most bytes one template may write. Fuel bounds the instructions, not what each writes: a
/// loop within the fuel over a large value writes gigabytes. 16 MiB is the default `sizeLimit`
/// of the in-memory volume the output goes to, so a larger file could not be written anyway.
pub const TEMPLATE_MAX_OUTPUT: usize = 16 * 1024 * 1024;

/// A `Vec` that refuses to grow past [`TEMPLATE_MAX_OUTPUT`].
struct Bounded(Vec<u8>);

impl std::io::Write for Bounded {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.0.len() + buf.len() > TEMPLATE_MAX_OUTPUT {
            return Err(std::io::Error::other("template output too large"));
        }
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The templates of all outputs, compiled once at start-up (syntax errors are configuration
/// errors). Undefined variables and attributes are errors (strict mode).
pub struct Templates {
    env: Environment<'static>,
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Templates")
    }
}

impl Default for Templates {
    fn default() -> Self {
        Templates::new()
    }
}

impl Templates {
    pub fn new() -> Templates {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_keep_trailing_newline(true);
        // Plain text output: no HTML escaping whatever the template's name.
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
        // A template comes from a pod annotation: bound its work, so nested loops over a large
        // secret end in an error instead of spinning the agent into its CPU and memory limits.
        env.set_fuel(Some(TEMPLATE_FUEL));
        Templates { env }
    }

    /// Compiles the template of output `name`. The message names the line.
    pub fn add(&mut self, name: &str, source: &str) -> Result<(), String> {
        self.env
            .add_template_owned(name.to_owned(), source.to_owned())
            .map_err(|e| template_error(&e))
    }

    /// Renders output `name`'s template with `secret` = this output's fields and `secrets` =
    /// every successfully fetched named output's fields.
    pub fn render(
        &self,
        name: &str,
        fields: &Fields,
        all: &BTreeMap<String, Fields>,
    ) -> Result<Sensitive, RenderError> {
        let tmpl = self
            .env
            .get_template(name)
            .map_err(|e| RenderError::Template(template_error(&e)))?;
        let secrets = Value::from_iter(all.iter().map(|(k, f)| (k.clone(), fields_value(f))));
        let ctx = Value::from_iter([
            ("secret".to_owned(), fields_value(fields)),
            ("secrets".to_owned(), secrets),
        ]);
        let mut out = Bounded(Vec::new());
        match tmpl.render_captured_to(ctx, &mut out) {
            Ok(_) => Ok(Sensitive::from(out.0)),
            Err(e) if e.kind() == ErrorKind::WriteFailure => Err(RenderError::Template(format!(
                "the output is larger than {TEMPLATE_MAX_OUTPUT} bytes (the template writes too much, \
                 e.g. a loop over a long value)"
            ))),
            Err(e) => Err(RenderError::Template(template_error(&e))),
        }
    }
}

fn fields_value(fields: &Fields) -> Value {
    Value::from_iter(fields.iter().map(|(k, v)| {
        let v = match v.expose_str() {
            Some(s) => Value::from(s),
            None => Value::from_bytes(v.expose().to_vec()),
        };
        (k.clone(), v)
    }))
}

/// A template error message without values: the kind, the line, and the detail only for
/// kinds whose detail is about the template's text (syntax, unknown filter, ...).
fn template_error(e: &minijinja::Error) -> String {
    let mut msg = e.kind().to_string();
    let detail_is_safe = matches!(
        e.kind(),
        ErrorKind::SyntaxError
            | ErrorKind::UnknownFilter
            | ErrorKind::UnknownTest
            | ErrorKind::UnknownFunction
            | ErrorKind::UnknownMethod
            | ErrorKind::TemplateNotFound
            | ErrorKind::BadEscape
    );
    if detail_is_safe && let Some(d) = e.detail() {
        let _ = write!(msg, ": {d}");
    }
    if e.kind() == ErrorKind::OutOfFuel {
        msg.push_str(" (the template does too much work, e.g. nested loops over long values)");
    }
    if e.kind() == ErrorKind::UndefinedError {
        msg.push_str(" (a variable or attribute the template uses does not exist)");
    }
    if let Some(line) = e.line() {
        let _ = write!(msg, " (line {line})");
    }
    msg
}

/// Renders `fields` in one of the non-template formats.
pub fn render(format: Format, fields: &Fields) -> Result<Sensitive, RenderError> {
    match format {
        Format::Raw => fields.get("value").cloned().ok_or(RenderError::NoValue),
        Format::Json => json(fields),
        Format::Yaml => yaml(fields),
        Format::Dotenv => dotenv(fields),
        Format::Properties => properties(fields),
        Format::Template => Err(RenderError::Template("no template compiled".into())),
    }
}

fn text<'a>(key: &str, v: &'a Sensitive) -> Result<&'a str, RenderError> {
    v.expose_str().ok_or_else(|| RenderError::NotUtf8(key.to_owned()))
}

/// Pretty JSON object, keys sorted, trailing newline.
fn json(fields: &Fields) -> Result<Sensitive, RenderError> {
    let mut map = serde_json::Map::new();
    for (k, v) in fields {
        map.insert(k.clone(), serde_json::Value::String(text(k, v)?.to_owned()));
    }
    let mut out = serde_json::to_vec_pretty(&serde_json::Value::Object(map)).unwrap_or_default();
    out.push(b'\n');
    Ok(Sensitive::new(out))
}

/// YAML mapping with every key and value a double-quoted scalar: no implicit typing
/// (`yes`, `0123`, `null` stay strings), no indentation rules for multi-line values.
fn yaml(fields: &Fields) -> Result<Sensitive, RenderError> {
    let mut out = String::new();
    if fields.is_empty() {
        out.push_str("{}\n");
    }
    for (k, v) in fields {
        inject_api::yaml::push_double_quoted(&mut out, k);
        out.push_str(": ");
        inject_api::yaml::push_double_quoted(&mut out, text(k, v)?);
        out.push('\n');
    }
    Ok(Sensitive::from(out))
}

/// `KEY='value'` when the value needs no escaping, else `KEY="value"` with `\\ \" \n \r \t \$
/// \`` escapes. Keys must be environment variable names.
fn dotenv(fields: &Fields) -> Result<Sensitive, RenderError> {
    let mut out = String::new();
    for (k, v) in fields {
        if inject_api::names::validate_env_name(k).is_err() {
            return Err(RenderError::BadEnvKey(k.clone()));
        }
        let s = text(k, v)?;
        if let Some(c) = s
            .chars()
            .find(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
        {
            return Err(RenderError::DotenvControl(k.clone(), c as u32));
        }
        out.push_str(k);
        out.push('=');
        if !s.contains(['\'', '\n', '\r']) {
            out.push('\'');
            out.push_str(s);
            out.push('\'');
        } else {
            out.push('"');
            for c in s.chars() {
                match c {
                    '\\' => out.push_str("\\\\"),
                    '"' => out.push_str("\\\""),
                    '$' => out.push_str("\\$"),
                    '`' => out.push_str("\\`"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    '\t' => out.push_str("\\t"),
                    c => out.push(c),
                }
            }
            out.push('"');
        }
        out.push('\n');
    }
    Ok(Sensitive::from(out))
}

/// Java `.properties`: `key=value`, ASCII only (`\uXXXX` for the rest), so it loads the same
/// through `Properties.load(InputStream)` (ISO-8859-1) and `load(Reader)` (UTF-8).
fn properties(fields: &Fields) -> Result<Sensitive, RenderError> {
    let mut out = String::new();
    for (k, v) in fields {
        properties_escape(&mut out, k, true);
        out.push('=');
        properties_escape(&mut out, text(k, v)?, false);
        out.push('\n');
    }
    Ok(Sensitive::from(out))
}

fn properties_escape(out: &mut String, s: &str, key: bool) {
    for (i, c) in s.chars().enumerate() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{c}' => out.push_str("\\f"),
            '=' | ':' | '#' | '!' => {
                out.push('\\');
                out.push(c);
            }
            ' ' if key || i == 0 => out.push_str("\\ "),
            c if (c as u32) < 0x20 || (c as u32) > 0x7e => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    let _ = write!(out, "\\u{unit:04X}");
                }
            }
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> Fields {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Sensitive::from(*v)))
            .collect()
    }

    fn out(s: Sensitive) -> String {
        String::from_utf8(s.expose().to_vec()).unwrap()
    }

    /// Compares without printing the (test) values on failure beyond what is needed.
    fn check(format: Format, input: &[(&str, &str)], expected: &str) {
        let got = out(render(format, &fields(input)).unwrap());
        assert!(
            got == expected,
            "{format} rendering differs:\n got: {got:?}\nwant: {expected:?}"
        );
    }

    #[test]
    fn raw_is_the_value() {
        check(Format::Raw, &[("value", "a\nb"), ("title", "t")], "a\nb");
        assert_eq!(
            render(Format::Raw, &fields(&[("x", "y")])),
            Err(RenderError::NoValue)
        );
        let bin: Fields = [("value".to_owned(), Sensitive::new(vec![0, 255, 1]))].into();
        assert_eq!(render(Format::Raw, &bin).unwrap().expose(), &[0, 255, 1]);
    }

    #[test]
    fn json_escapes() {
        check(
            Format::Json,
            &[("value", "p\"w\n\\"), ("username", "u")],
            "{\n  \"username\": \"u\",\n  \"value\": \"p\\\"w\\n\\\\\"\n}\n",
        );
        let v: serde_json::Value = serde_json::from_slice(
            render(Format::Json, &fields(&[("a", "\u{1}é")]))
                .unwrap()
                .expose(),
        )
        .unwrap();
        assert_eq!(v["a"], "\u{1}é");
    }

    #[test]
    fn yaml_is_always_quoted() {
        check(
            Format::Yaml,
            &[("value", "yes"), ("title", "0123"), ("n", "null")],
            "\"n\": \"null\"\n\"title\": \"0123\"\n\"value\": \"yes\"\n",
        );
        check(
            Format::Yaml,
            &[("value", "a\"b\\c\nd\te\u{1}\u{7f}\u{85}é")],
            "\"value\": \"a\\\"b\\\\c\\nd\\te\\u0001\\u007F\\u0085é\"\n",
        );
        check(Format::Yaml, &[], "{}\n");
    }

    #[test]
    fn dotenv_quoting() {
        check(
            Format::Dotenv,
            &[("A", "plain $HOME #x =y \"q\"")],
            "A='plain $HOME #x =y \"q\"'\n",
        );
        check(Format::Dotenv, &[("A", "it's")], "A=\"it's\"\n");
        check(
            Format::Dotenv,
            &[("A", "l1\nl2 $x `c` \\ \"q\"\r\t")],
            "A=\"l1\\nl2 \\$x \\`c\\` \\\\ \\\"q\\\"\\r\\t\"\n",
        );
        check(Format::Dotenv, &[("A", "")], "A=''\n");
    }

    #[test]
    fn dotenv_refuses_bad_keys_and_controls() {
        for bad in ["1A", "A-B", "my title", "a.b", ""] {
            let e = render(Format::Dotenv, &fields(&[(bad, "v")])).unwrap_err();
            assert_eq!(e, RenderError::BadEnvKey(bad.to_owned()));
            assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
        }
        let e = render(Format::Dotenv, &fields(&[("A", "x\0y")])).unwrap_err();
        assert_eq!(e, RenderError::DotenvControl("A".into(), 0));
        assert!(!e.to_string().contains("x\0y"));
    }

    #[test]
    fn properties_escaping() {
        check(
            Format::Properties,
            &[("my key=1:#!", " lead = x:y #c !e\\ \n\té€😀")],
            "my\\ key\\=1\\:\\#\\!=\\ lead \\= x\\:y \\#c \\!e\\\\ \\n\\t\\u00E9\\u20AC\\uD83D\\uDE00\n",
        );
    }

    #[test]
    fn binary_values_only_raw() {
        let bin: Fields = [("value".to_owned(), Sensitive::new(vec![0xff, 0xfe]))].into();
        for f in [Format::Json, Format::Yaml, Format::Dotenv, Format::Properties] {
            assert_eq!(render(f, &bin), Err(RenderError::NotUtf8("value".into())), "{f}");
        }
    }

    #[test]
    fn templates_combine_outputs_and_are_strict() {
        let mut t = Templates::new();
        t.add(
            "cfg",
            "user={{ secret.username }}\npw={{ secrets.db.value }}{{ secrets[\"api-key\"].value }}\n",
        )
        .unwrap();
        t.add("bad", "{{ secret.nope }}").unwrap();
        t.add("html", "{{ secret.value }}").unwrap();
        let mine = fields(&[("username", "u"), ("value", "pw1")]);
        let all: BTreeMap<String, Fields> = [
            ("db".to_owned(), fields(&[("value", "<&>")])),
            ("api-key".to_owned(), fields(&[("value", "K")])),
        ]
        .into();
        assert_eq!(out(t.render("cfg", &mine, &all).unwrap()), "user=u\npw=<&>K\n");
        let e = t.render("bad", &mine, &all).unwrap_err().to_string();
        assert!(e.starts_with("template: undefined value"), "{e}");
        assert!(e.contains("line 1"), "{e}");
        assert_eq!(
            out(t.render("html", &fields(&[("value", "<&>")]), &all).unwrap()),
            "<&>"
        );
        // Built-in filters are not compiled in (binary size): a filter is an error naming it.
        t.add("filter", "{{ secret.value | no_such_filter }}").unwrap();
        let e = t.render("filter", &mine, &all).unwrap_err().to_string();
        assert!(e.starts_with("template: unknown filter"), "{e}");
        // Loops over a map yield its keys.
        t.add(
            "loop",
            "{% for k in secret %}{{ k }}={{ secret[k] }};{% endfor %}",
        )
        .unwrap();
        assert_eq!(
            out(t.render("loop", &mine, &all).unwrap()),
            "username=u;value=pw1;"
        );
        let e = t.add("syntax", "line1\n{{ secret.value ").unwrap_err();
        assert!(e.starts_with("syntax error"), "{e}");
        assert!(e.contains("line 2"), "{e}");
    }

    #[test]
    fn template_errors_never_show_values() {
        let mut t = Templates::new();
        t.add("call", "{{ secret.value() }}").unwrap();
        t.add("idx", "{{ secret.value[secret.other] }}").unwrap();
        t.add("math", "{{ secret.value - 1 }}").unwrap();
        let mine = fields(&[("value", "SEKRIT-VALUE"), ("other", "SEKRIT-OTHER")]);
        for name in ["call", "idx", "math"] {
            if let Err(e) = t.render(name, &mine, &BTreeMap::new()) {
                let e = e.to_string();
                assert!(!e.contains("SEKRIT"), "{name}: value in error message");
            }
        }
    }

    #[test]
    fn runaway_templates_run_out_of_fuel() {
        let mut t = Templates::new();
        // Four nested loops over a 100-character value: 10^8 iterations without the bound.
        t.add(
            "runaway",
            "{% for a in secret.value %}{% for b in secret.value %}{% for c in secret.value %}\
             {% for d in secret.value %}x{% endfor %}{% endfor %}{% endfor %}{% endfor %}",
        )
        .unwrap();
        let long = "v".repeat(100);
        let mine = fields(&[("value", long.as_str())]);
        let e = t
            .render("runaway", &mine, &BTreeMap::new())
            .unwrap_err()
            .to_string();
        assert!(e.contains("fuel"), "{e}");
        // An ordinary loop over a secret's fields stays far within it.
        t.add(
            "fields",
            "{% for k in secret %}{{ k }}={{ secret[k] }}\n{% endfor %}",
        )
        .unwrap();
        let many: Vec<(String, String)> = (0..500).map(|i| (format!("k{i}"), "v".repeat(64))).collect();
        let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert!(t.render("fields", &fields(&many), &BTreeMap::new()).is_ok());
    }

    #[test]
    fn template_output_is_bounded() {
        let mut t = Templates::new();
        // 100 × 100 iterations (about 40,000 instructions, far within the fuel), each writing a
        // 4 KiB value: 40 MB without the bound.
        t.add(
            "writes-much",
            "{% for a in secret.title %}{% for b in secret.title %}{{ secret.value }}{% endfor %}{% endfor %}",
        )
        .unwrap();
        let title = "t".repeat(100);
        let value = "v".repeat(4096);
        let mine = fields(&[("title", title.as_str()), ("value", value.as_str())]);
        let e = t
            .render("writes-much", &mine, &BTreeMap::new())
            .unwrap_err()
            .to_string();
        assert!(e.contains("larger than 16777216 bytes"), "{e}");
        // Just under the bound is written whole.
        let value = "v".repeat(TEMPLATE_MAX_OUTPUT / 10_000);
        let mine = fields(&[("title", title.as_str()), ("value", value.as_str())]);
        let written = t.render("writes-much", &mine, &BTreeMap::new()).unwrap();
        assert_eq!(written.len(), value.len() * 10_000);
    }
}
