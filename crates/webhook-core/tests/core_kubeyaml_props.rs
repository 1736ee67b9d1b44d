//! Property tests of the manifest reader and writer (`kubeyaml`) and of `inject` on generated
//! documents. 256 cases from a fixed seed, so CI runs the same work every time; `PROPTEST_CASES` and
//! `PROPTEST_RNG_SEED` run more or others (`ps_testkit::proptest_config`).
// A test, not the core: the purity lints (clippy.toml) do not apply.
#![allow(
    clippy::disallowed_methods,
    clippy::disallowed_types,
    clippy::disallowed_macros
)]

mod inject_common;

use inject_common::{expected_document, json_difference};
use proptest::prelude::*;
use ps_testkit::proptest_config;
use webhook_core::{
    config::Config,
    inject::inject_manifests,
    kubeyaml::{Entry, Map, Mark, Node, Value, read_stream, write},
};

/// Strings a YAML writer gets wrong: every YAML 1.1/1.2 special spelling, indicators, quotes,
/// line breaks of every kind, spaces at the ends, non-printable characters; and random text.
fn tricky_string() -> impl Strategy<Value = String> {
    let specials = prop::sample::select(vec![
        "",
        "y",
        "Y",
        "n",
        "N",
        "yes",
        "No",
        "ON",
        "off",
        "true",
        "False",
        "~",
        "null",
        "NULL",
        "0400",
        "0o17",
        "0x1F",
        "0b101",
        "1_000",
        "1:30",
        "1e3",
        ".5",
        "+.5",
        "-1",
        ".inf",
        "-.Inf",
        ".NaN",
        "2001-12-14",
        "2001-12-14 21:59:43.10 -5",
        "<<",
        "=",
        "- a",
        "-a",
        "? a",
        ": a",
        "a:",
        "a: b",
        "a #b",
        "#a",
        "&a",
        "*a",
        "!a",
        "!!str",
        "|",
        ">",
        "%a",
        "@a",
        "`a",
        "'",
        "\"",
        "''",
        "{}",
        "[]",
        "{a: 1}",
        "[a]",
        "a,b",
        "---",
        "...",
        "--- a",
        " a",
        "a ",
        "\ta",
        "a\t",
        "a\nb",
        "a\n",
        "\na",
        "a\n\n",
        "a\r\nb",
        "a\rb",
        "a\u{85}b",
        "a\u{2028}b",
        "\u{feff}a",
        "a\u{0}b",
        "\u{7f}",
        "é",
        "😀",
        "a\\b",
        "\\n",
        "line 1\n  line 2\n",
        "x\n# not a comment\n",
        "  \n",
        "a\n ",
        "a\n\t b",
    ])
    .prop_map(str::to_owned);
    prop_oneof![
        4 => specials,
        2 => "[ -~]{0,12}",
        2 => "[a-z0-9 :#'\"\\-\n\t{}\\[\\],.]{0,16}",
        1 => any::<String>(),
    ]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::Int),
        ((i64::MAX as u64 + 1)..=u64::MAX).prop_map(Value::UInt),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::Float),
        tricky_string().prop_map(Value::String),
    ]
}

fn node(value: Value) -> Node {
    Node::new(value, Mark::NONE)
}

fn tree() -> impl Strategy<Value = Node> {
    leaf().prop_map(node).prop_recursive(5, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(|items| node(Value::Seq(items))),
            prop::collection::vec((tricky_string(), inner), 0..5).prop_map(|entries| {
                let mut map = Map::new();
                for (key, value) in entries {
                    map.insert(
                        key,
                        Entry {
                            key_mark: Mark::NONE,
                            node: value,
                        },
                    );
                }
                node(Value::Map(map))
            }),
        ]
    })
}

/// A document's value as the reader gives it.
fn reread(text: &str) -> Result<Option<serde_json::Value>, String> {
    let stream = read_stream(text).map_err(|e| format!("{}: {}\n{text}", e.mark, e.message))?;
    let mut nodes = stream.documents.into_iter().filter_map(|d| d.node);
    let first = nodes.next().map(|n| n.to_json());
    if nodes.next().is_some() {
        return Err(format!("more than one document:\n{text}"));
    }
    Ok(first)
}

fn as_document(value: &serde_json::Value) -> Option<serde_json::Value> {
    // kubectl skips a document that reads as null.
    (!value.is_null()).then(|| value.clone())
}

proptest! {
    #![proptest_config(proptest_config(256))]

    /// Whatever the writer writes reads back to the same JSON, as YAML (LF and CRLF) and as JSON.
    #[test]
    fn written_values_read_back_the_same(value in tree()) {
        let expected = as_document(&value.to_json());
        for crlf in [false, true] {
            let yaml = write::to_yaml(&value, crlf);
            prop_assert_eq!(reread(&yaml).map_err(TestCaseError::fail)?, expected.clone(), "YAML:\n{}", yaml);
            // Behind a --- as well (the writer's text is one document of a stream).
            let after = format!("kind: X\n---\n{yaml}");
            let stream = read_stream(&after).map_err(|e| TestCaseError::fail(e.message))?;
            prop_assert_eq!(stream.documents.len(), 2);
            let json = write::to_json(&value, crlf);
            let as_yaml_doc = format!("kind: X\n---\n{json}");
            let stream = read_stream(&as_yaml_doc).map_err(|e| TestCaseError::fail(format!("{e}\n{json}")))?;
            prop_assert_eq!(stream.documents[1].node.as_ref().map(Node::to_json), expected.clone(), "JSON in YAML:\n{}", json);
        }
    }

    /// Random text never panics the reader or `inject`.
    #[test]
    fn arbitrary_text_never_panics(text in prop_oneof![
        any::<String>(),
        "[ -~\n\t]{0,200}",
        "([a-z]{1,3}: ?(\\[|\\{|&a |\\*a|<<|---|\\.\\.\\.|'|\"|\\||>|-|#|\n|  )*\n){0,12}",
    ]) {
        let _ = read_stream(&text);
        let _ = inject_manifests(&text, &Config::default(), None);
    }

    /// Documents without the opt-in come back byte for byte, whatever they hold.
    #[test]
    fn untouched_streams_are_copied(docs in prop::collection::vec((tree(), any::<bool>(), "(# [a-z ]{0,10}\n){0,2}"), 0..5)) {
        let mut input = String::new();
        for (value, crlf, comment) in &docs {
            input.push_str(comment);
            input.push_str(&write::to_yaml(value, *crlf));
            input.push_str("---\n");
        }
        let out = inject_manifests(&input, &Config::default(), None).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(out.changed, 0);
        prop_assert_eq!(out.output, input);
    }

    /// An opted-in Deployment carrying arbitrary values comes out as kubectl's reading of it
    /// plus exactly the webhook's patch, and a second pass changes nothing.
    #[test]
    fn injected_documents_keep_every_value(extra in tree(), env in prop::collection::vec(tricky_string(), 0..4), crlf in any::<bool>()) {
        let mut doc = serde_json::json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"x": extra.to_json()}},
            "spec": {"template": {
                "metadata": {"annotations": {"ps-injector.io/inject": "true", "ps-injector.io/secret-db": "team-a/db/password"}},
                "spec": {"containers": [{"name": "app", "image": "app", "args": env.clone(),
                    "env": env.iter().enumerate().map(|(i, v)| serde_json::json!({"name": format!("E{i}"), "value": v})).collect::<Vec<_>>()}],
                    "x-extra": extra.to_json()}
            }}
        });
        if doc["metadata"]["labels"]["x"].is_null() {
            doc["metadata"]["labels"]["x"] = serde_json::json!("null");
        }
        let input = write::to_yaml(&Node::from_json(&doc.to_string(), Mark::NONE).unwrap(), crlf);
        let out = inject_manifests(&input, &Config::default(), None).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(out.changed, 1);
        let after = reread(&out.output).map_err(TestCaseError::fail)?.unwrap();
        let expected = expected_document(&doc, None, &Config::default()).map_err(TestCaseError::fail)?;
        prop_assert!(json_difference(&after, &expected, "").is_none(), "{:?}\n{}", json_difference(&after, &expected, ""), out.output);
        let again = inject_manifests(&out.output, &Config::default(), None).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(again.changed, 0);
        prop_assert_eq!(again.output, out.output);
    }
}

/// Hostile nesting is refused at the limit, before the scanner goes deeper; every depth up to
/// it is read (the time is linear in the input: the scanner's per-token work grows with the
/// flow depth, which the limit bounds).
#[test]
fn hostile_nesting_is_bounded() {
    use webhook_core::kubeyaml::read::MAX_DEPTH;
    for (open, close) in [("[", "]"), ("{a: ", "}")] {
        let ok = format!("{}1{}", open.repeat(MAX_DEPTH), close.repeat(MAX_DEPTH));
        assert!(read_stream(&ok).is_ok(), "{open} x {MAX_DEPTH}");
        let deep = format!("{}1{}", open.repeat(MAX_DEPTH + 1), close.repeat(MAX_DEPTH + 1));
        let e = read_stream(&deep).unwrap_err();
        assert!(e.message.contains("nest deeper than"), "{}", e.message);
        // A huge hostile document: many tokens at the deepest allowed flow level.
        let wide = format!(
            "{}{}{}",
            "[".repeat(MAX_DEPTH - 1),
            "a, ".repeat(50_000),
            "]".repeat(MAX_DEPTH - 1)
        );
        assert!(read_stream(&wide).is_ok());
    }
    // Block nesting, and aliases that nest through each other.
    let block: String = (0..=MAX_DEPTH)
        .map(|i| format!("{}k:\n", " ".repeat(i)))
        .collect();
    assert!(
        read_stream(&block)
            .unwrap_err()
            .message
            .contains("nest deeper than")
    );
    let mut chain = String::from("a0: &a0 [x]\n");
    for i in 1..=MAX_DEPTH + 1 {
        chain.push_str(&format!("a{i}: &a{i} [*a{}]\n", i - 1));
    }
    assert!(
        read_stream(&chain)
            .unwrap_err()
            .message
            .contains("nest deeper than")
    );
    // Billion laughs: go-yaml's limit on alias expansion applies.
    let mut laughs =
        String::from("a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n");
    for (i, name) in ["b", "c", "d", "e", "f", "g", "h", "i"].iter().enumerate() {
        let prev = ["a", "b", "c", "d", "e", "f", "g", "h"][i];
        laughs.push_str(&format!(
            "{name}: &{name} [{}]\n",
            vec![format!("*{prev}"); 9].join(",")
        ));
    }
    assert!(
        read_stream(&laughs)
            .unwrap_err()
            .message
            .contains("excessive aliasing")
    );
}
