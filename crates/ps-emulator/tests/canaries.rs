//! Minted secrets carry the suite's canary (crates/testkit/canaries.txt): session cookies, OAuth
//! access tokens and rotated passwords start `PSCANARY-<kind>-`, so `scripts/canary-check` finds
//! any of them that reaches a log. Values are never printed, canaries included.

mod common;

use common::*;
use ps_emulator::{CANARY_MARKER, Emulator, Options, SESSION_COOKIE, testing};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

/// What the emulator minted: the session cookie of a sign-in, an OAuth access token, and the
/// password of `db-prod/svc_app` after a check-in rotated it.
async fn minted(emu: &Emulator) -> (String, String, String) {
    let c = client(emu);
    let r = sign_in_header(&c, emu, &format!("PS-Auth key={KEY_A}; runas=svc-team-a;")).await;
    assert_eq!(r.status(), StatusCode::OK);
    let cookie = r
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .and_then(|v| v.strip_prefix(&format!("{SESSION_COOKIE}=")))
        .expect("a session cookie")
        .to_string();

    let r = token_response(&bare_client(emu), emu, CLIENT_ID, CLIENT_SECRET).await;
    assert_eq!(r.status(), StatusCode::OK);
    let token: Value = r.json().await.unwrap();
    let token = token["access_token"].as_str().expect("access_token").to_string();
    let r = sign_in_header(&client(emu), emu, &format!("Bearer {token}")).await;
    assert_eq!(r.status(), StatusCode::OK, "the minted token signs in");

    let (_, acct) = get_json(&c, emu, "ManagedAccounts?systemName=db-prod&accountName=svc_app").await;
    let body = json!({"SystemID": acct["SystemId"], "AccountID": acct["AccountId"], "DurationMinutes": 5});
    let seeded = release(emu, &c, &body).await;
    let rotated = release(emu, &c, &body).await;
    assert!(seeded != rotated, "the check-in rotated the password");
    (cookie, token, rotated)
}

/// Requests an account, reads its password and checks the request in.
async fn release(emu: &Emulator, c: &Client, body: &Value) -> String {
    let r = c.post(url(emu, "Requests")).json(body).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let id = r.text().await.unwrap();
    let r = get(c, emu, &format!("Credentials/{id}")).await;
    assert_eq!(r.status(), StatusCode::OK);
    let pw: String = r.json().await.unwrap();
    let r = c
        .put(url(emu, &format!("Requests/{id}/checkin")))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    pw
}

#[tokio::test]
async fn minted_secrets_carry_a_listed_canary_by_default() {
    let emu = start().await;
    let (cookie, token, rotated) = minted(&emu).await;
    let kinds: Vec<&str> = testing::canary_kinds().collect();
    for kind in ["session", "oauth-token", "rotated-pw"] {
        assert!(kinds.contains(&kind), "{kind} is listed in canaries.txt");
    }
    assert!(
        cookie.starts_with(&format!("{CANARY_MARKER}-session-")),
        "the session cookie carries the canary (value not shown)"
    );
    assert!(cookie.len() > 30, "and 24 random characters after it");
    let segments: Vec<&str> = token.split('.').collect();
    assert_eq!(segments.len(), 3, "the token keeps the JWT's shape");
    assert!(
        segments[2].starts_with(&format!("{CANARY_MARKER}-oauth-token-")),
        "the token's signature segment carries the canary (value not shown)"
    );
    assert!(
        segments[2]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "and stays base64url"
    );
    assert!(
        rotated.starts_with(&format!("{CANARY_MARKER}-rotated-pw-")),
        "the rotated password carries the canary (value not shown)"
    );
}

#[tokio::test]
async fn without_canaries_nothing_minted_holds_the_marker() {
    let emu = start_with(Options {
        canaries: false,
        ..Options::default()
    })
    .await;
    let (cookie, token, rotated) = minted(&emu).await;
    for (what, v) in [
        ("cookie", cookie),
        ("token", token),
        ("rotated password", rotated),
    ] {
        assert!(!v.contains(CANARY_MARKER), "{what} holds no canary");
    }
}

#[test]
fn assert_no_canary_names_the_kind_and_never_the_value() {
    testing::assert_no_canary("a log line with a PS CANARY and scanary words", "clean");
    for (text, kind) in [
        ("x=PSCANARY-secret-pw-Db-9f8e7d", "secret-pw"),
        (r#"{"t":"pscanary-oauth-token-abc"}"#, "oauth-token"),
        ("PSCANARY-nokind", "of unknown kind"),
    ] {
        let err = std::panic::catch_unwind(|| testing::assert_no_canary(text, "log"))
            .expect_err("a canary fails the assertion");
        let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(msg.contains(&format!("canary {kind} appears")), "{msg}");
        for part in ["9f8e7d", "abc", "nokind"] {
            assert!(!msg.contains(part), "{msg}");
        }
    }
}
