//! Property tests of the response decoders: Password Safe bodies, arbitrary bytes, arbitrary
//! JSON and golden bodies with edits. Whatever the body, a decoder returns a value or a short
//! reason (the client wraps it in `Error::InvalidResponse`), never panics, and never puts the
//! body, which may hold a value, into the reason. Memory: the body is at most the client's
//! limit (`MAX_API_BODY`, `max_file_bytes`, checked while it streams in) and decoding holds
//! one `serde_json::Value` of it, whose nesting serde_json caps at 128 levels.
//!
//! CI runs a fixed number of cases from a fixed seed; more with `PROPTEST_CASES`, others with
//! `PROPTEST_RNG_SEED` (`ps_testkit::proptest_config`).

use proptest::prelude::*;
use ps_testkit::{bytes, json, proptest_config};
use serde_json::{Value, json};

use super::*;
use crate::error::{MAX_DETAIL_CHARS, summarize_body};

/// Values in the golden bodies; never in a reason.
const CANARY: &str = "Pw-Canary-4e1f";

/// Spellings the decoders look for.
const WORDS: &[&str] = &[
    "Id",
    "Title",
    "Password",
    "password",
    "SecretType",
    "File",
    "Text",
    "Credential",
    "FolderPath",
    "Data",
    "TotalCount",
    "SystemId",
    "AccountId",
    "SystemName",
    "AccountName",
    "db-prod",
    "svc_app",
    CANARY,
    "",
];

/// The bodies Password Safe sends, one per decoder: secret lists of 3.0/3.1 and 3.2, a
/// credential, a request ID, managed accounts (one object, a list).
fn golden() -> Vec<Value> {
    vec![
        json!([
            {"Id": "0f0e", "Title": "db", "Username": "app", "Password": CANARY, "SecretType": "Credential",
             "FolderPath": "team-a\\prod", "OwnerId": 1},
            {"Id": 7, "Title": "cert", "SecretType": "File", "FileName": "tls.crt", "FolderPath": "team-a"},
            {"Id": "9", "Title": "note", "SecretType": "Text", "Password": CANARY}
        ]),
        json!({"TotalCount": 1, "Data": [{"Id": "1", "Title": "t", "Password": CANARY}]}),
        json!(CANARY),
        json!(42),
        json!({"SystemId": 3, "AccountId": 4, "SystemName": "db-prod", "AccountName": "svc_app"}),
        json!([
            {"SystemId": 3, "AccountId": 4, "SystemName": "db-prod", "AccountName": "svc_app"},
            {"SystemId": 5, "AccountId": 6, "SystemName": "other", "AccountName": "svc_app"}
        ]),
    ]
}

/// A body: arbitrary bytes, arbitrary JSON, or a golden body with JSON or byte edits.
fn body() -> impl Strategy<Value = Vec<u8>> {
    let golden = golden();
    let count = golden.len();
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..512),
        json::any_json(WORDS).prop_map(|v| v.to_string().into_bytes()),
        (0..count, prop::collection::vec(json::edit(WORDS), 1..4)).prop_map({
            let golden = golden.clone();
            move |(i, edits)| {
                let mut v = golden[i].clone();
                for e in &edits {
                    json::apply(&mut v, e);
                }
                v.to_string().into_bytes()
            }
        }),
        (0..count, prop::collection::vec(bytes::edit(), 1..4)).prop_map(move |(i, edits)| {
            let mut b = golden[i].to_string().into_bytes();
            for e in &edits {
                bytes::apply(&mut b, e);
            }
            b
        }),
    ]
}

/// A reason is one short line that holds no value.
fn check_reason(reason: &str) -> Result<(), TestCaseError> {
    prop_assert!(!reason.contains(CANARY), "the reason shows a value: {reason}");
    prop_assert!(reason.len() <= 200 && !reason.contains('\n'), "{reason}");
    Ok(())
}

/// No key of the metadata is `Password` (the value is taken out first).
fn check_metadata(metadata: &Value) -> Result<(), TestCaseError> {
    if let Value::Object(map) = metadata {
        prop_assert!(
            !map.keys().any(|k| k.eq_ignore_ascii_case("password")),
            "the metadata holds the value"
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(proptest_config(512))]

    #[test]
    fn secret_lists(body in body()) {
        match decode_secret_list(&body) {
            Ok((list, _)) => {
                for s in &list {
                    check_metadata(&s.metadata)?;
                }
            }
            Err(reason) => check_reason(&reason)?,
        }
    }

    #[test]
    fn credentials(body in body()) {
        match decode_credentials(&body) {
            Ok(value) => {
                let text = std::str::from_utf8(&body).unwrap();
                let unquoted: String = serde_json::from_str(text.trim()).unwrap();
                prop_assert!(value.expose_bytes() == unquoted.as_bytes(), "the value is the JSON string");
            }
            Err(reason) => check_reason(&reason)?,
        }
    }

    #[test]
    fn request_ids(body in body()) {
        if let Err(reason) = decode_request_id(&body) {
            check_reason(&reason)?;
        }
    }

    #[test]
    fn managed_accounts(body in body()) {
        if let Err(reason) = decode_managed_account(&body, "db-prod", "svc_app") {
            check_reason(&reason)?;
        }
    }

    #[test]
    fn error_bodies_are_summarised_to_one_short_line(body in body()) {
        if let Some(summary) = summarize_body(&body) {
            prop_assert!(summary.chars().count() <= MAX_DETAIL_CHARS + 1, "{summary}");
            prop_assert!(!summary.chars().any(char::is_control), "{summary:?}");
        }
    }
}

/// Nesting far deeper than serde_json's limit is refused without exhausting the stack.
#[test]
fn deep_nesting_is_refused() {
    for (open, close) in [("[", "]"), ("{\"a\":", "}")] {
        let depth = 100_000;
        let body = format!("{}1{}", open.repeat(depth), close.repeat(depth)).into_bytes();
        assert!(decode_secret_list(&body).is_err());
        assert!(decode_credentials(&body).is_err());
        assert!(decode_request_id(&body).is_err());
        assert!(decode_managed_account(&body, "s", "a").is_err());
    }
}

/// The golden bodies decode: the edits start from bodies that work.
#[test]
fn golden_bodies_decode() {
    let g: Vec<Vec<u8>> = golden().iter().map(|v| v.to_string().into_bytes()).collect();
    assert_eq!(decode_secret_list(&g[0]).unwrap().0.len(), 3);
    assert_eq!(decode_secret_list(&g[1]).unwrap().1, Some(1));
    assert!(decode_credentials(&g[2]).unwrap().expose_bytes() == CANARY.as_bytes());
    assert_eq!(decode_request_id(&g[3]).unwrap(), 42);
    assert_eq!(
        decode_managed_account(&g[4], "db-prod", "svc_app").unwrap(),
        Some((3, 4))
    );
    assert_eq!(
        decode_managed_account(&g[5], "DB-PROD", "svc_app").unwrap(),
        Some((3, 4))
    );
}
