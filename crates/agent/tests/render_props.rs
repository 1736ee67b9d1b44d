//! Property tests of output templates (`render::Templates`): generated templates (loops nested
//! over values, conditions, string repetition, concatenation, undefined names, stray syntax)
//! over generated fields. Whatever the template, compiling and rendering end; a render either
//! writes at most `TEMPLATE_MAX_OUTPUT` bytes or fails, bounded by the fuel (instructions) and
//! the output bound (bytes), and no message shows a value.
//!
//! CI runs a fixed number of cases from a fixed seed; more with `PROPTEST_CASES`, others with
//! `PROPTEST_RNG_SEED` (`ps_testkit::proptest_config`).

use std::collections::BTreeMap;

use proptest::prelude::*;
use ps_agent::{
    render::{Fields, TEMPLATE_MAX_OUTPUT, Templates},
    value::Sensitive,
};
use ps_testkit::proptest_config;

/// Marks every field value: never in a message.
const CANARY: &str = "Val-Canary-3d9c";

fn expression() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "secret.value",
        "secret.username",
        "secret.title",
        "secrets.db.value",
        "secrets['api-key'].value",
        "secret",
        "secrets",
        "secret.value * 3",
        "secret.value * 1000",
        "secret.value ~ secret.title ~ secret.value",
        "secret.nope",
        "secrets.nope.value",
        "1 + 2",
        "secret.value[0]",
        "secret.value[1:3]",
        "secret.value | no_filter",
        "secret.value()",
        "secret.value - 1",
        "loop.index",
    ])
    .prop_map(str::to_owned)
}

/// What a `for` iterates: the characters of a value, a map's keys.
fn sequence() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "secret.value",
        "secret.title",
        "secret",
        "secrets",
        "secrets.db",
    ])
    .prop_map(str::to_owned)
}

/// A template: text, expressions, and loops and conditions nested a few levels deep.
fn template() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        "[a-z =:\n{}%#]{0,8}",
        expression().prop_map(|e| format!("{{{{ {e} }}}}")),
    ];
    leaf.prop_recursive(4, 32, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 1..4).prop_map(|parts| parts.concat()),
            (sequence(), inner.clone())
                .prop_map(|(seq, body)| format!("{{% for x in {seq} %}}{body}{{% endfor %}}")),
            (expression(), inner.clone(), inner)
                .prop_map(|(cond, a, b)| format!("{{% if {cond} %}}{a}{{% else %}}{b}{{% endif %}}")),
        ]
    })
}

/// An output's fields; each value holds the canary, and is up to 64 KiB long.
fn fields() -> impl Strategy<Value = Fields> {
    (
        0usize..200,
        prop::sample::select(vec![0usize, 10, 1000, 65_536]),
        "[a-z]{0,8}",
    )
        .prop_map(|(title, value, user)| {
            let mut f = Fields::new();
            f.insert("title".into(), Sensitive::from("t".repeat(title)));
            f.insert(
                "value".into(),
                Sensitive::from(format!("{CANARY}{}", "v".repeat(value))),
            );
            f.insert("username".into(), Sensitive::from(user));
            f
        })
}

fn all(mine: &Fields) -> BTreeMap<String, Fields> {
    let mut db = Fields::new();
    db.insert("value".into(), Sensitive::from(format!("{CANARY}-db")));
    [("db".to_owned(), db), ("api-key".to_owned(), mine.clone())].into()
}

fn check(source: &str, mine: &Fields) -> Result<(), TestCaseError> {
    let mut t = Templates::new();
    if let Err(e) = t.add("out", source) {
        prop_assert!(!e.contains(CANARY), "{e}");
        return Ok(());
    }
    match t.render("out", mine, &all(mine)) {
        Ok(out) => prop_assert!(out.len() <= TEMPLATE_MAX_OUTPUT, "{} bytes", out.len()),
        Err(e) => {
            let e = e.to_string();
            prop_assert!(!e.contains(CANARY), "a value in the message: {e}");
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(proptest_config(256))]

    #[test]
    fn generated_templates(source in template(), mine in fields()) {
        check(&source, &mine)?;
    }

    #[test]
    fn arbitrary_text(source in "(\\PC|\\{\\{|\\{%|%\\}|\\}\\}|\\{#){0,64}", mine in fields()) {
        check(&source, &mine)?;
    }
}
