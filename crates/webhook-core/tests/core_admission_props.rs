//! Property tests of `review()`: AdmissionReview bytes, arbitrary or mutated from the golden
//! fixtures (`tests/fixtures/admission`), never make it panic, and every answer is either HTTP
//! 400 or a well-formed AdmissionReview that echoes the uid when the request's can be read.
//! Every patch applies to its pod; when the pod is one kube-apiserver could send (it decodes as
//! a `k8s_openapi` Pod), the patched pod keeps the invariants of the golden tests
//! ([`admission_common::check_invariants`]).
//!
//! CI runs a fixed number of cases from a fixed seed; run longer or elsewhere with
//! `PROPTEST_CASES=100000 PROPTEST_RNG_SEED=<n> cargo test -p webhook-core --test core_admission_props`.
// A test, not the core: the purity lints (clippy.toml) do not apply.
#![allow(
    clippy::disallowed_methods,
    clippy::disallowed_types,
    clippy::disallowed_macros
)]

mod admission_common;

use std::sync::OnceLock;

use admission_common::{cases, check_invariants, config_for, fixtures};
use k8s_openapi::api::core::v1::Pod;
use proptest::{prelude::*, sample::Index};
use ps_testkit::{bytes, json, proptest_config};
use serde_json::{Map, Value, json};
use webhook_core::{
    admission::{Outcome, review},
    config::Config,
};

/// One golden fixture: its name, its bytes and its cluster configuration.
struct Fixture {
    name: String,
    body: Vec<u8>,
    config: Config,
}

fn corpus() -> &'static [Fixture] {
    static CORPUS: OnceLock<Vec<Fixture>> = OnceLock::new();
    CORPUS.get_or_init(|| {
        cases()
            .into_iter()
            .map(|name| Fixture {
                body: std::fs::read(fixtures().join(format!("admission/{name}.json"))).unwrap(),
                config: config_for(&name),
                name,
            })
            .collect()
    })
}

/// Every `ps-injector.io/*` annotation the fixtures use (valid and invalid values alike): the
/// vocabulary of the annotation mutations.
fn annotation_pool() -> &'static [(String, String)] {
    static POOL: OnceLock<Vec<(String, String)>> = OnceLock::new();
    POOL.get_or_init(|| {
        let mut pool = Vec::new();
        for f in corpus() {
            let Ok(v) = serde_json::from_slice::<Value>(&f.body) else {
                continue;
            };
            if let Some(map) = v
                .pointer("/request/object/metadata/annotations")
                .and_then(Value::as_object)
            {
                for (k, v) in map {
                    if let (true, Some(v)) = (k.starts_with("ps-injector.io/"), v.as_str()) {
                        pool.push((k.clone(), v.to_owned()));
                    }
                }
            }
        }
        pool.sort();
        pool.dedup();
        assert!(pool.len() > 30, "annotation pool too small: {pool:?}");
        pool
    })
}

/// The strings that matter to the webhook, for generated JSON.
const WORDS: &[&str] = &[
    "",
    "Pod",
    "CREATE",
    "UPDATE",
    "v1",
    "true",
    "ps-agent",
    "ps-agent-init",
    "app",
    "ps-injector.io/inject",
    "ps-secrets",
    "/ps/secrets",
    "Always",
    "Never",
    "0",
    "\u{0}",
    "é",
    "a\"b\\c",
    "{{ secret.password }}",
];

/// One edit of a fixture's JSON: generic, or aimed at what the webhook reads.
#[derive(Debug, Clone)]
enum Edit {
    Json(json::Edit),
    /// The pod's annotations become `inject: true` plus these pool entries.
    Annotations(Vec<Index>),
    /// A container (of containers, else initContainers) is duplicated under this name.
    CloneContainer(Index, String),
    /// The pod spec's field is set to the value (users, restart policy, names that clash).
    SpecField(&'static str, Value),
}

fn edit() -> impl Strategy<Value = Edit> {
    let names = prop::sample::select(vec![
        "app",
        "sidecar",
        "ps-agent",
        "ps-agent-init",
        "ps-agent-copy",
        "ps-secrets",
        "x",
        "",
    ]);
    prop_oneof![
        6 => json::edit(WORDS).prop_map(Edit::Json),
        3 => prop::collection::vec(any::<Index>(), 1..6).prop_map(Edit::Annotations),
        2 => (any::<Index>(), names).prop_map(|(i, n)| Edit::CloneContainer(i, n.to_owned())),
        2 => prop_oneof![
            any::<i64>().prop_map(|u| Edit::SpecField("securityContext", json!({"runAsUser": u % 70_000}))),
            prop::sample::select(vec!["Always", "Never", "OnFailure", ""])
                .prop_map(|p| Edit::SpecField("restartPolicy", json!(p))),
            Just(Edit::SpecField("volumes", json!([{"name": "ps-secrets", "emptyDir": {}}]))),
            Just(Edit::SpecField("volumes", json!([{"name": "ps-no-token", "emptyDir": {}}]))),
            Just(Edit::SpecField(
                "initContainers",
                json!([{"name": "migrate", "image": "m:1", "command": ["/m"]}])
            )),
        ],
    ]
}

fn apply(doc: &mut Value, edit: &Edit) {
    match edit {
        Edit::Json(e) => json::apply(doc, e),
        Edit::Annotations(picks) => {
            let pool = annotation_pool();
            let mut map = Map::new();
            map.insert("ps-injector.io/inject".into(), json!("true"));
            for p in picks {
                let (k, v) = json::pick(pool, p);
                map.insert(k.clone(), json!(v));
            }
            if let Some(meta) = doc
                .pointer_mut("/request/object/metadata")
                .and_then(Value::as_object_mut)
            {
                meta.insert("annotations".into(), Value::Object(map));
            }
        }
        Edit::CloneContainer(pick, name) => {
            for array in ["containers", "initContainers"] {
                let Some(list) = doc
                    .pointer_mut(&format!("/request/object/spec/{array}"))
                    .and_then(Value::as_array_mut)
                else {
                    continue;
                };
                if list.is_empty() {
                    continue;
                }
                let mut copy = list[pick.index(list.len())].clone();
                copy["name"] = json!(name);
                list.push(copy);
                break;
            }
        }
        Edit::SpecField(field, value) => {
            if let Some(spec) = doc
                .pointer_mut("/request/object/spec")
                .and_then(Value::as_object_mut)
            {
                spec.insert((*field).to_owned(), value.clone());
            }
        }
    }
}

/// The properties of one answer. `label` names the input in failure messages.
fn check_answer(label: &str, body: &[u8], config: &Config) {
    let result = review(body, config);
    let input: Option<Value> = serde_json::from_slice(body).ok();
    // serde_json skips the strings the webhook does not read without checking their UTF-8, so a
    // body that is JSON but for bytes that are not UTF-8 inside such a string gets an answer.
    // Read it as the webhook did, with those bytes replaced.
    let lossy: Option<Value> = input
        .clone()
        .or_else(|| serde_json::from_str(&String::from_utf8_lossy(body)).ok());
    match result.http_status {
        400 => {
            assert!(input.is_none(), "{label}: HTTP 400 for a JSON body");
            assert_eq!(result.outcome, Outcome::Invalid, "{label}");
            return;
        }
        200 => {}
        other => panic!("{label}: HTTP {other}"),
    }
    let answer: Value = serde_json::from_slice(&result.body)
        .unwrap_or_else(|e| panic!("{label}: the answer is not JSON: {e}"));
    assert_eq!(answer["kind"], "AdmissionReview", "{label}: {answer}");
    assert!(
        answer["apiVersion"]
            .as_str()
            .is_some_and(|v| v.starts_with("admission.k8s.io/")),
        "{label}: {answer}"
    );
    let response = &answer["response"];
    let allowed = response["allowed"]
        .as_bool()
        .unwrap_or_else(|| panic!("{label}: no response.allowed: {answer}"));
    assert!(response["uid"].is_string(), "{label}: {answer}");
    for w in &result.warnings {
        assert!(w.len() <= 256 && !w.contains('\n'), "{label}: warning {w:?}");
    }
    let Some(input) = lossy else {
        // Not JSON as a whole, yet answered: the answer was known before the broken part
        // (the pass stops early), so it can only be an allowed skip.
        assert!(
            matches!(result.outcome, Outcome::Skipped | Outcome::AlreadyInjected),
            "{label}: {:?} for a body that is not JSON",
            result.outcome
        );
        assert!(
            response.get("patch").is_none(),
            "{label}: patch for a broken body"
        );
        return;
    };
    if let Some(uid) = input.pointer("/request/uid").and_then(Value::as_str) {
        assert_eq!(response["uid"], uid, "{label}: uid not echoed");
    }
    assert_eq!(
        allowed,
        !matches!(result.outcome, Outcome::Denied | Outcome::Invalid),
        "{label}: {answer}"
    );
    if !allowed {
        let message = response["status"]["message"].as_str().unwrap_or_default();
        assert!(
            !message.is_empty(),
            "{label}: refused without a message: {answer}"
        );
    }
    let Some(patch) = ps_testkit::decoded_patch(response) else {
        assert_ne!(
            result.outcome,
            Outcome::Injected,
            "{label}: injected without a patch"
        );
        return;
    };
    assert_eq!(result.outcome, Outcome::Injected, "{label}");
    assert_eq!(response["patchType"], "JSONPatch", "{label}");
    let patch: json_patch::Patch =
        serde_json::from_value(patch).unwrap_or_else(|e| panic!("{label}: not a JSON Patch: {e}"));
    let mut pod = input["request"]["object"].clone();
    json_patch::patch(&mut pod, &patch).unwrap_or_else(|e| panic!("{label}: the patch does not apply: {e}"));
    // A pod that passes kube-apiserver's validation (it decodes as a Pod, its container names
    // are unique) keeps every invariant of the golden tests. Mutating admission runs before
    // validation, so the webhook sees the others too; the apiserver then refuses them.
    let names: Vec<&str> = ["containers", "initContainers"]
        .iter()
        .filter_map(|a| input["request"]["object"]["spec"][a].as_array())
        .flatten()
        .filter_map(|c| c["name"].as_str())
        .collect();
    let unique = names.iter().collect::<std::collections::BTreeSet<_>>().len() == names.len();
    if unique
        && serde_json::from_slice::<Value>(body).is_ok()
        && serde_json::from_value::<Pod>(input["request"]["object"].clone()).is_ok()
    {
        check_invariants(label, body, config);
    }
}

#[test]
fn every_golden_fixture_answers_well() {
    for f in corpus() {
        check_answer(&f.name, &f.body, &f.config);
    }
}

proptest! {
    #![proptest_config(proptest_config(256))]

    #[test]
    fn arbitrary_bytes(body in prop::collection::vec(any::<u8>(), 0..2048)) {
        check_answer("arbitrary bytes", &body, &corpus()[0].config);
    }

    #[test]
    fn arbitrary_json(value in json::any_json(WORDS)) {
        let body = serde_json::to_vec(&value).unwrap();
        check_answer("arbitrary JSON", &body, &corpus()[0].config);
    }

    #[test]
    fn fixtures_with_json_edits(
        pick in any::<Index>(),
        edits in prop::collection::vec(edit(), 1..5),
    ) {
        let f = json::pick(corpus(), &pick);
        let Ok(mut doc) = serde_json::from_slice::<Value>(&f.body) else {
            return Ok(()); // the fixtures that are not JSON are covered by the byte edits
        };
        for e in &edits {
            apply(&mut doc, e);
        }
        let body = serde_json::to_vec(&doc).unwrap();
        check_answer(&format!("{} with {edits:?}", f.name), &body, &f.config);
    }

    #[test]
    fn fixtures_with_byte_edits(
        pick in any::<Index>(),
        edits in prop::collection::vec(bytes::edit(), 1..4),
    ) {
        let f = json::pick(corpus(), &pick);
        let mut body = f.body.clone();
        for e in &edits {
            bytes::apply(&mut body, e);
        }
        check_answer(&format!("{} with {edits:?}", f.name), &body, &f.config);
    }
}
