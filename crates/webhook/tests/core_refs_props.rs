//! The reference contract, as a property: whatever the webhook admits, the agent runs.
//!
//! Generated annotation sets hold secret, folder and managed-account references in every
//! annotation that takes one (`secret-*`, `folder-*`, `account-*`, `secrets`, `folders`,
//! `managed-accounts`, `env-*`): short and near-limit names, non-ASCII and astral characters
//! (two UTF-16 units each), whitespace around names and separators, deep paths. At most one
//! reference per pod is broken on purpose, with exactly one known fault. For every pod:
//! - without a fault, the webhook admits it, and `ps_agent::config::load` (the agent's start-up
//!   parser) accepts the `PS_AGENT_CONFIG` of every injected agent container;
//! - with a fault, the webhook refuses it with a message that names the annotation, the fault
//!   (the limit, for a limit) and the fix.
//!
//! 128 cases from a fixed seed in CI; `PROPTEST_CASES=N` runs more, `PROPTEST_RNG_SEED=S` others.

mod common;
mod contract_common;

use common::{app_pod, pod_review};
use contract_common::{agent_containers, with_credentials};
use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::{prelude::*, test_runner::TestRunner};
use ps_webhook::{
    admission::{Outcome, review},
    config::Config,
};
use serde_json::{Map, Value};

/// The project's convention (`ps_testkit::proptest_config`): 128 cases from a fixed seed.
fn proptest_config() -> ProptestConfig {
    ps_testkit::proptest_config(128)
}

/// Text of exactly `units` UTF-16 code units, from one of three alphabets: ASCII, Latin-1
/// letters (one unit, two UTF-8 bytes), or astral emoji (two units) padded with ASCII.
fn text_of_units(units: usize) -> impl Strategy<Value = String> {
    (0..3u8, any::<u64>()).prop_map(move |(alphabet, salt)| {
        let letters: Vec<char> = "abcdefghijklmnopqrstuvwxyz0123456789-_".chars().collect();
        let pick = |i: usize| letters[(salt as usize).wrapping_add(i * 7) % letters.len()];
        match alphabet {
            0 => (0..units).map(pick).collect(),
            1 => (0..units)
                .map(|i| if i % 2 == 0 { 'é' } else { pick(i) })
                .collect(),
            _ => {
                let mut s: String = std::iter::repeat_n('😀', units / 2).collect();
                if units % 2 == 1 {
                    s.push('x');
                }
                s
            }
        }
    })
}

/// A valid name whose length is below, at or just under `max` UTF-16 units, possibly with
/// inner spaces and padded with whitespace (trimmed by the contract).
fn name(max: usize) -> impl Strategy<Value = String> {
    let short = prop_oneof![
        "[a-z0-9][a-z0-9_-]{0,11}",
        // Inner spaces, dots, non-ASCII scripts.
        "[a-z][a-z .]{0,6}[a-z]",
        prop::sample::select(vec!["Équipe", "データ", "db 😀 prod", "ёлка", ".hidden", "a..b"])
            .prop_map(str::to_owned),
    ];
    let near = prop_oneof![Just(max), Just(max - 1), 1..=max].prop_flat_map(text_of_units);
    let body = prop_oneof![4 => short, 1 => near];
    let pad = prop::sample::select(vec!["", "", "", " ", "\t", "  ", "\u{3000}"]);
    (pad.clone(), body, pad).prop_map(|(a, b, c)| format!("{a}{b}{c}"))
}

/// A separator with optional whitespace around it (trimmed away by the contract).
fn sep() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["/", "/", "/", " / ", "/ ", "\t/"])
}

fn join(segments: Vec<String>, seps: Vec<&str>) -> String {
    let mut out = String::new();
    for (i, s) in segments.into_iter().enumerate() {
        if i > 0 {
            out.push_str(seps[(i - 1) % seps.len()]);
        }
        out.push_str(&s);
    }
    out
}

fn seps() -> impl Strategy<Value = Vec<&'static str>> {
    prop::collection::vec(sep(), 1..4)
}

fn folder_path(depth: std::ops::RangeInclusive<usize>) -> impl Strategy<Value = String> {
    (prop::collection::vec(name(256), depth), seps()).prop_map(|(s, seps)| join(s, seps))
}

fn secret_path() -> impl Strategy<Value = String> {
    (folder_path(1..=7), sep(), name(256)).prop_map(|(f, s, t)| format!("{f}{s}{t}"))
}

fn account_ref() -> impl Strategy<Value = String> {
    (name(128), sep(), name(245)).prop_map(|(s, sep, a)| format!("{s}{sep}{a}"))
}

/// What a reference annotation refers to.
#[derive(Clone, Copy, Debug, PartialEq)]
enum RefKind {
    Secret,
    Folder,
    Account,
}

/// One fault, the words the refusal must contain, and the fault's limit (if it is one).
#[derive(Clone, Debug)]
struct Fault {
    value: String,
    expect: String,
}

fn fault(kind: RefKind) -> BoxedStrategy<Fault> {
    let f = |value: String, expect: &str| Fault {
        value,
        expect: expect.to_owned(),
    };
    let structural = prop_oneof![
        Just(f("team//x".into(), "has an empty segment (number 2)")),
        Just(f("/team/x".into(), "has an empty segment (number 1)")),
        Just(f("team/ /x".into(), "has an empty segment (number 2)")),
        Just(f("team/../x".into(), "segment (number 2)")),
        Just(f("team/x\u{7}y/z".into(), "control character U+0007 (segment 2)")),
    ];
    match kind {
        RefKind::Secret => prop_oneof![
            (8..=10usize).prop_map(move |d| f(
                format!("{}/title", vec!["f"; d].join("/")),
                &format!("has a folder depth of {d}, more than the maximum of 7")
            )),
            (257..=300usize).prop_flat_map(text_of_units).prop_map(move |t| f(
                format!("team/{t}"),
                "title of 257-300 characters (UTF-16 code units), more than the maximum of 256"
            )),
            (257..=300usize).prop_flat_map(text_of_units).prop_map(move |n| f(
                format!("team/{n}/title"),
                "folder name of 257-300 characters (UTF-16 code units), more than the maximum of 256"
            )),
            Just(f("password".into(), "has no folder")),
            structural,
        ]
        .boxed(),
        RefKind::Folder => prop_oneof![
            (8..=10usize).prop_map(move |d| f(
                vec!["f"; d].join("/"),
                &format!("has a folder depth of {d}, more than the maximum of 7")
            )),
            (257..=300usize).prop_flat_map(text_of_units).prop_map(move |n| f(
                format!("team/{n}"),
                "folder name of 257-300 characters (UTF-16 code units), more than the maximum of 256"
            )),
            structural,
        ]
        .boxed(),
        RefKind::Account => prop_oneof![
            (129..=150usize).prop_flat_map(text_of_units).prop_map(move |s| f(
                format!("{s}/svc"),
                "system name of 129-150 characters (UTF-16 code units), more than the maximum of 128"
            )),
            (246..=270usize).prop_flat_map(text_of_units).prop_map(move |a| f(
                format!("sys/{a}"),
                "account name of 246-270 characters (UTF-16 code units), more than the maximum of 245"
            )),
            Just(f("db-prod".into(), "has 1 part(s), not exactly two")),
            Just(f("a/b/c".into(), "has 3 part(s), not exactly two")),
            Just(f("sys//svc".into(), "has an empty segment (number 2)")),
        ]
        .boxed(),
    }
}

/// Where a reference goes.
#[derive(Clone, Copy, Debug)]
enum Slot {
    Secret,
    Folder,
    Account,
    SecretsList,
    FoldersList,
    AccountsList,
    EnvSecret,
    EnvUsername,
    EnvAccount,
}

impl Slot {
    const ALL: [Slot; 9] = [
        Slot::Secret,
        Slot::Folder,
        Slot::Account,
        Slot::SecretsList,
        Slot::FoldersList,
        Slot::AccountsList,
        Slot::EnvSecret,
        Slot::EnvUsername,
        Slot::EnvAccount,
    ];

    fn kind(self) -> RefKind {
        match self {
            Slot::Secret | Slot::SecretsList | Slot::EnvSecret | Slot::EnvUsername => RefKind::Secret,
            Slot::Folder | Slot::FoldersList => RefKind::Folder,
            Slot::Account | Slot::AccountsList | Slot::EnvAccount => RefKind::Account,
        }
    }

    fn valid(self) -> BoxedStrategy<String> {
        match self.kind() {
            RefKind::Secret => secret_path().boxed(),
            RefKind::Folder => folder_path(1..=7).boxed(),
            RefKind::Account => account_ref().boxed(),
        }
    }

    /// The annotation key of the `i`-th reference in this slot, and its value.
    fn annotation(self, i: usize, reference: &str) -> (String, String) {
        let p = "ps-injector.io/";
        match self {
            // Output names never equal a generated first segment (those are lower case), so a
            // BeyondTrust list entry never clashes with an output.
            Slot::Secret => (format!("{p}secret-Out{i}"), reference.to_owned()),
            Slot::Folder => (format!("{p}folder-Dir{i}"), reference.to_owned()),
            Slot::Account => (format!("{p}account-Acct{i}"), reference.to_owned()),
            Slot::SecretsList => (format!("{p}secrets"), reference.to_owned()),
            Slot::FoldersList => (format!("{p}folders"), reference.to_owned()),
            Slot::AccountsList => (format!("{p}managed-accounts"), reference.to_owned()),
            Slot::EnvSecret => (format!("{p}env-S{i}"), format!("secret:{reference}")),
            Slot::EnvUsername => (format!("{p}env-U{i}"), format!("username:{reference}")),
            Slot::EnvAccount => (format!("{p}env-A{i}"), format!("account:{reference}")),
        }
    }
}

/// An annotation set and, when one reference is broken, its key and what the refusal says.
#[derive(Clone, Debug)]
struct Case {
    annotations: Vec<(String, String)>,
    broken: Option<(String, Fault)>,
}

fn case() -> impl Strategy<Value = Case> {
    let refs = prop::collection::vec(
        prop::sample::select(Slot::ALL.to_vec()).prop_flat_map(|slot| (Just(slot), slot.valid())),
        1..6,
    );
    let broken = prop::option::weighted(
        0.5,
        (
            prop::sample::select(Slot::ALL.to_vec()),
            any::<prop::sample::Index>(),
        )
            .prop_flat_map(|(slot, at)| (Just(slot), Just(at), fault(slot.kind()))),
    );
    (refs, broken).prop_map(|(refs, broken)| {
        let mut entries: Vec<(Slot, String, bool)> = refs.into_iter().map(|(s, r)| (s, r, false)).collect();
        let mut fault_of = None;
        if let Some((slot, at, fault)) = broken {
            let index = at.index(entries.len() + 1);
            entries.insert(index, (slot, fault.value.clone(), true));
            fault_of = Some(fault);
        }
        // Lists join their entries with commas; every other slot is its own annotation.
        let mut annotations: Vec<(String, String)> = vec![
            ("ps-injector.io/inject".into(), "true".into()),
            // env-* needs the values before the app starts.
            ("ps-injector.io/mode".into(), "init".into()),
        ];
        let mut broken_key = None;
        for (i, (slot, reference, is_broken)) in entries.into_iter().enumerate() {
            let (key, value) = slot.annotation(i, &reference);
            if is_broken {
                broken_key = Some(key.clone());
            }
            match annotations.iter_mut().find(|(k, _)| *k == key) {
                Some((_, existing)) => {
                    existing.push_str(" , ");
                    existing.push_str(&value);
                }
                None => annotations.push((key, value)),
            }
        }
        Case {
            annotations,
            broken: broken_key.zip(fault_of),
        }
    })
}

/// The fault's expected words, where a range `257-300` stands for any number in it.
fn says(message: &str, expect: &str) -> bool {
    let Some((head, tail)) = expect.split_once(" characters") else {
        return message.contains(expect);
    };
    // "<what> of <lo>-<hi>": the message holds "<what> of <n>" with lo <= n <= hi.
    let (what, range) = head.rsplit_once(' ').expect("a range");
    let (lo, hi) = range.split_once('-').expect("lo-hi");
    let (lo, hi): (usize, usize) = (lo.parse().unwrap(), hi.parse().unwrap());
    (lo..=hi).any(|n| message.contains(&format!("{what} {n} characters{tail}")))
}

/// What a run covered, so a generator that drifts (every pod refused, or no name at a limit)
/// fails the test instead of passing it vacuously.
#[derive(Default)]
struct Coverage {
    admitted: AtomicUsize,
    refused: AtomicUsize,
    /// Admitted with a name of exactly 256 UTF-16 units (folder name or title).
    at_limit: AtomicUsize,
    /// Admitted with a character outside the Basic Multilingual Plane.
    astral: AtomicUsize,
    /// Admitted with whitespace around a name or a separator.
    padded: AtomicUsize,
    /// Admitted with a 7-folder path.
    deepest: AtomicUsize,
    /// Refused for a limit.
    limits: AtomicUsize,
}

fn check(case: &Case, config: &Config, seen: &Coverage) -> Result<(), TestCaseError> {
    let annotations: Map<String, Value> = case
        .annotations
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    let body = pod_review("uid-contract", app_pod("contract", Value::Object(annotations)));
    let result = review(&body, config);
    let count = |c: &AtomicUsize| c.fetch_add(1, Ordering::Relaxed);
    match &case.broken {
        None => {
            prop_assert_eq!(
                result.outcome,
                Outcome::Injected,
                "a pod with valid references is refused: {:?}",
                result.message
            );
            let containers = agent_containers(&result.body);
            prop_assert!(!containers.is_empty());
            for c in containers {
                let vars = with_credentials(c.env);
                if let Err(e) = ps_agent::config::load(&vars, &ps_agent::config::Tuning::default()) {
                    return Err(TestCaseError::fail(format!(
                        "the webhook admitted the pod, but the agent refuses {}'s configuration: {}",
                        c.name, e.0
                    )));
                }
            }
            count(&seen.admitted);
            let values = || case.annotations.iter().map(|(_, v)| v.as_str());
            let names = || values().flat_map(|v| v.split([',', '/', ':']).map(str::trim));
            if names().any(|n| n.encode_utf16().count() == 256) {
                count(&seen.at_limit);
            }
            if values().any(|v| v.chars().any(|c| c.len_utf16() == 2)) {
                count(&seen.astral);
            }
            if values().any(|v| v.contains([' ', '\t', '\u{3000}'])) {
                count(&seen.padded);
            }
            if values().any(|v| v.split(',').any(|r| r.matches('/').count() >= 7)) {
                count(&seen.deepest);
            }
        }
        Some((key, fault)) => {
            prop_assert_eq!(result.outcome, Outcome::Denied, "a broken reference is admitted");
            let message = result.message.unwrap_or_default();
            prop_assert!(
                message.starts_with(&format!("annotation {key}: ")),
                "the refusal does not name {}: {}",
                key,
                message
            );
            prop_assert!(
                says(&message, &fault.expect),
                "the refusal does not say {:?}: {}",
                fault.expect,
                message
            );
            prop_assert!(
                message.contains("; use ")
                    || message.contains(": shorten it")
                    || message.contains("shallower path"),
                "the refusal names no fix: {}",
                message
            );
            count(&seen.refused);
            if fault.expect.contains("maximum of") {
                count(&seen.limits);
            }
        }
    }
    Ok(())
}

#[test]
fn what_the_webhook_admits_the_agent_runs() {
    let config = Config::default();
    let seen = Coverage::default();
    let mut runner = TestRunner::new(proptest_config());
    if let Err(e) = runner.run(&case(), |case| check(&case, &config, &seen)) {
        panic!("{e}");
    }
    let n = |c: &AtomicUsize| c.load(Ordering::Relaxed);
    let cases = proptest_config().cases as usize;
    // Each kind of case is a sizeable share of the run, not a lucky few.
    for (what, got, at_least) in [
        ("admitted", n(&seen.admitted), cases / 4),
        ("refused", n(&seen.refused), cases / 4),
        ("refused for a limit", n(&seen.limits), cases / 16),
        (
            "admitted with a name of exactly 256 units",
            n(&seen.at_limit),
            cases / 32,
        ),
        ("admitted with astral characters", n(&seen.astral), cases / 32),
        ("admitted with whitespace to trim", n(&seen.padded), cases / 8),
        ("admitted with a 7-folder path", n(&seen.deepest), cases / 32),
    ] {
        assert!(
            got >= at_least.max(1),
            "{what}: {got} of {cases} cases, expected at least {at_least}"
        );
    }
}

/// The bug of issue 9, pinned: a folder depth of 8 was admitted and the agent then exited 2.
#[test]
fn a_path_deeper_than_password_safe_allows_is_refused_at_admission() {
    let case = Case {
        annotations: vec![
            ("ps-injector.io/inject".into(), "true".into()),
            ("ps-injector.io/secret-db".into(), "a/b/c/d/e/f/g/h/title".into()),
        ],
        broken: Some((
            "ps-injector.io/secret-db".into(),
            Fault {
                value: String::new(),
                expect: "secret path \"a/b/c/d/e/f/g/h/title\" has a folder depth of 8, more than the maximum of 7; \
                         Password Safe nests folders at most 7 deep (a safe and 6 subfolders): use a shallower path"
                    .into(),
            },
        )),
    };
    check(&case, &Config::default(), &Coverage::default()).unwrap();
    for (key, value, limit) in [
        ("secret-db", format!("team/{}", "t".repeat(257)), "maximum of 256"),
        ("folder-db", format!("{}/x", "f".repeat(257)), "maximum of 256"),
        ("account-db", format!("{}/svc", "s".repeat(129)), "maximum of 128"),
        ("account-db", format!("sys/{}", "a".repeat(246)), "maximum of 245"),
    ] {
        let case = Case {
            annotations: vec![
                ("ps-injector.io/inject".into(), "true".into()),
                (format!("ps-injector.io/{key}"), value.clone()),
            ],
            broken: Some((
                format!("ps-injector.io/{key}"),
                Fault {
                    value,
                    expect: limit.into(),
                },
            )),
        };
        check(&case, &Config::default(), &Coverage::default()).unwrap();
    }
}
