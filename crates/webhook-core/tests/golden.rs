//! Golden AdmissionReview fixtures.
//!
//! Every `tests/fixtures/admission/<case>.json` goes through `review()` with the cluster
//! configuration `tests/fixtures/config/<case>.yaml` (or `default.yaml`). The answer is compared
//! with `tests/fixtures/expected/<case>.json`, where the base64 `patch` is shown decoded;
//! `UPDATE_GOLDEN=1 cargo test -p webhook-core --test golden` rewrites the expected files.
//!
//! Every injected case is also checked for the invariants: the patch applies with json-patch,
//! the result is a valid `k8s_openapi` Pod with each agent container once, the volume once,
//! every target container mounted read-only, restricted-compliant injected containers, the
//! no-token volume once and mounted at the ServiceAccount token path in every injected container
//! (so the ServiceAccount admission plugin gives none of them a token) and in no app container,
//! and a second pass that changes nothing.
// A test, not the core: the purity lints (clippy.toml) do not apply.
#![allow(
    clippy::disallowed_methods,
    clippy::disallowed_types,
    clippy::disallowed_macros
)]

mod admission_common;

use std::fs;

use admission_common::{cases, check_invariants, config_for, fixtures};
use serde_json::{Value, json};
use webhook_core::admission::{Outcome, review};

/// The comparable form of a result: the response with the patch decoded.
fn comparable(status: u16, outcome: Outcome, mode: Option<&str>, body: &[u8]) -> Value {
    if status != 200 {
        return json!({
            "httpStatus": status,
            "outcome": outcome.as_str(),
            "body": String::from_utf8_lossy(body),
        });
    }
    let mut review: Value = serde_json::from_slice(body).expect("the response is JSON");
    if let Some(decoded) = ps_testkit::decoded_patch(&review) {
        review["response"]["patch"] = decoded;
    }
    json!({
        "httpStatus": status,
        "outcome": outcome.as_str(),
        "mode": mode,
        "review": review,
    })
}

#[test]
fn golden_admission_reviews() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let expected_dir = fixtures().join("expected");
    fs::create_dir_all(&expected_dir).unwrap();
    let mut failures = Vec::new();
    let all = cases();
    assert!(all.len() >= 40, "fixtures missing: {all:?}");
    for case in &all {
        let body = fs::read(fixtures().join("admission").join(format!("{case}.json"))).unwrap();
        let config = config_for(case);
        let result = review(&body, &config);
        let actual = comparable(result.http_status, result.outcome, result.mode, &result.body);
        let path = expected_dir.join(format!("{case}.json"));
        let pretty = serde_json::to_string_pretty(&actual).unwrap() + "\n";
        if update {
            fs::write(&path, &pretty).unwrap();
        } else {
            match fs::read_to_string(&path) {
                Ok(text) => {
                    let expected: Value = serde_json::from_str(&text).unwrap();
                    if expected != actual {
                        failures.push(format!(
                            "{case}: differs from {}\n{}",
                            path.display(),
                            similar::TextDiff::from_lines(&text, &pretty).unified_diff()
                        ));
                    }
                }
                Err(_) => failures.push(format!("{case}: no expected file (run with UPDATE_GOLDEN=1)")),
            }
        }

        // Properties of every answer.
        // The apiserver may truncate warnings over 256 characters.
        for w in &result.warnings {
            assert!(
                w.len() <= 256 && !w.contains('\n'),
                "{case}: warning too long or multi-line: {w}"
            );
        }
        if result.http_status == 200 {
            let review: Value = serde_json::from_slice(&result.body).unwrap();
            let input: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            assert_eq!(review["kind"], "AdmissionReview", "{case}");
            if let Some(uid) = input.pointer("/request/uid").and_then(Value::as_str) {
                assert_eq!(review["response"]["uid"], uid, "{case}: uid echoed");
            }
            if let Some(v) = input.pointer("/apiVersion") {
                assert_eq!(&review["apiVersion"], v, "{case}: apiVersion echoed");
            }
            assert_eq!(
                review["response"]["allowed"],
                result.outcome != Outcome::Denied && result.outcome != Outcome::Invalid
            );
        }
        match result.outcome {
            Outcome::Injected => check_invariants(case, &body, &config),
            Outcome::Denied => {
                let message = result.message.as_deref().unwrap_or_default();
                assert!(message.len() > 20, "{case}: {message}");
                assert!(case.starts_with("deny-"), "{case} was denied: {message}");
            }
            _ => assert!(!case.starts_with("deny-"), "{case} was not denied"),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn patch_is_a_base64_string() {
    let body = fs::read(fixtures().join("admission/plain-pod.json")).unwrap();
    let result = review(&body, &config_for("plain-pod"));
    let text = String::from_utf8(result.body).unwrap();
    assert!(text.contains(r#""patchType":"JSONPatch","patch":""#), "{text}");
}

#[test]
fn dry_run_gets_the_same_patch() {
    let read = |case: &str| {
        let body = fs::read(fixtures().join(format!("admission/{case}.json"))).unwrap();
        let r = review(&body, &config_for(case));
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        v["response"]["patch"].clone()
    };
    assert_eq!(read("dry-run"), read("plain-pod"));
}
