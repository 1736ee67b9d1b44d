//! Authentication: PS-Auth variants, OAuth, sessions, sign-out, prefixes and case.

mod common;

use std::time::Duration;

use common::*;
use ps_emulator::{AUTH_FAILED, Options, SESSION_COOKIE};
use reqwest::StatusCode;
use serde_json::{Value, json};

#[tokio::test]
async fn every_ps_auth_variant_of_the_reference_signs_in() {
    let emu = start().await;
    let variants = [
        // Hand-written form of the usage page.
        format!("PS-Auth key={KEY_A}; runas=svc-team-a;"),
        // Go library / Terraform: no spaces.
        format!("PS-Auth key={KEY_A};runas=svc-team-a;"),
        // Without the final ';'.
        format!("PS-Auth key={KEY_A}; runas=svc-team-a"),
        // Quoted values.
        format!(r#"PS-Auth key="{KEY_A}"; runas="svc-team-a";"#),
        // Scheme and names in other cases, extra spaces.
        format!("ps-auth  KEY={KEY_A} ;  RunAs=svc-team-a ;"),
        // Run-as user name in another case.
        format!("PS-Auth key={KEY_A}; runas=SVC-Team-A;"),
        // A pwd given to a user that has none is ignored.
        format!("PS-Auth key={KEY_A}; runas=svc-team-a; pwd=[whatever];"),
        // Password user: bracketed, unbracketed, quoted.
        format!("PS-Auth key={KEY_A}; runas=svc-deployer; pwd=[{DEPLOYER_PWD}];"),
        format!("PS-Auth key={KEY_A};runas=svc-deployer;pwd=[{DEPLOYER_PWD}]"),
        format!(r#"PS-Auth key={KEY_A}; runas=svc-deployer; pwd="[{DEPLOYER_PWD}]";"#),
    ];
    for (i, h) in variants.iter().enumerate() {
        let c = client(&emu);
        let r = sign_in_header(&c, &emu, h).await;
        assert_eq!(r.status(), StatusCode::OK, "variant {i}");
        let cookie = r
            .headers()
            .get("set-cookie")
            .expect("Set-Cookie")
            .to_str()
            .unwrap()
            .to_string();
        assert!(
            cookie.starts_with(&format!("{SESSION_COOKIE}=")),
            "variant {i}: {cookie}"
        );
        let body: Value = r.json().await.unwrap();
        assert!(body["UserId"].as_u64().is_some(), "variant {i}");
        assert!(
            body["UserName"].as_str().unwrap().starts_with("svc-"),
            "variant {i}"
        );
        assert_eq!(body["SID"], Value::Null);
        assert_eq!(body["EmailAddress"], Value::Null);
        assert_eq!(body["Name"], body["UserName"]);
        // The session works.
        let (status, _) = get_json(&c, &emu, "secrets-safe/safes").await;
        assert_eq!(status, StatusCode::OK, "variant {i}");
    }
    assert_eq!(state(&emu).await["sessions_open"], json!(variants.len()));
}

#[tokio::test]
async fn refused_sign_ins_get_401_with_the_real_text() {
    let emu = start().await;
    let cases = [
        ("bad key", "PS-Auth key=nope; runas=svc-team-a;".to_string()),
        (
            "wrong runas for the key",
            format!("PS-Auth key={KEY_A}; runas=svc-team-b;"),
        ),
        ("unknown runas", format!("PS-Auth key={KEY_A}; runas=ghost;")),
        ("missing runas", format!("PS-Auth key={KEY_A};")),
        ("missing pwd", format!("PS-Auth key={KEY_A}; runas=svc-deployer;")),
        (
            "wrong pwd",
            format!("PS-Auth key={KEY_A}; runas=svc-deployer; pwd=[wrong];"),
        ),
        ("empty header", String::new()),
        ("unknown scheme", format!("Basic {KEY_A}")),
        ("unknown bearer token", "Bearer abc.def.ghi".to_string()),
    ];
    for (what, h) in cases {
        let c = client(&emu);
        let r = sign_in_header(&c, &emu, &h).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{what}");
        assert!(r.headers().get("set-cookie").is_none(), "{what}");
        assert_eq!(error_text(r).await, AUTH_FAILED, "{what}");
    }
    // Without any Authorization header at all.
    let c = client(&emu);
    let r = c.post(url(&emu, "Auth/SignAppIn")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(state(&emu).await["sessions_open"], json!(0));
}

#[tokio::test]
async fn oauth_token_then_bearer_sign_in() {
    let emu = start().await;
    let c = client(&emu);
    let r = token_response(&c, &emu, CLIENT_ID, CLIENT_SECRET).await;
    assert_eq!(r.status(), StatusCode::OK);
    let tok: Value = r.json().await.unwrap();
    assert_eq!(tok["token_type"], "Bearer");
    assert_eq!(tok["scope"], "publicapi");
    assert_eq!(tok["expires_in"], 3600);
    let access = tok["access_token"].as_str().unwrap();
    assert_eq!(access.split('.').count(), 3, "JWT-shaped");

    let r = sign_in_header(&c, &emu, &format!("Bearer {access}")).await;
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["UserName"], "app-team-a");
    let (status, v) = get_json(&c, &emu, "secrets-safe/secrets?path=team-a/db&title=password").await;
    assert_eq!(status, StatusCode::OK);
    assert_value(
        v[0]["Password"].as_str(),
        "PSCANARY-secret-pw-s3cret",
        "password via OAuth session",
    );

    // The client id is a GUID: matched without regard to case. Scheme in lower case.
    let r = c
        .post(url(&emu, "auth/connect/token"))
        .form(&[
            ("client_id", CLIENT_ID.to_uppercase().as_str()),
            ("client_secret", CLIENT_SECRET),
            ("grant_type", "client_credentials"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let access: Value = r.json().await.unwrap();
    let r = sign_in_header(
        &c,
        &emu,
        &format!("bearer {}", access["access_token"].as_str().unwrap()),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn oauth_failures() {
    let emu = start().await;
    let c = client(&emu);
    type Form<'a> = Vec<(&'a str, &'a str)>;
    let cases: [(&str, Form<'_>, &str); 5] = [
        (
            "unknown client",
            vec![
                ("client_id", "00000000-0000-0000-0000-000000000000"),
                ("client_secret", CLIENT_SECRET),
                ("grant_type", "client_credentials"),
            ],
            "invalid_client",
        ),
        (
            "wrong secret",
            vec![
                ("client_id", CLIENT_ID),
                ("client_secret", "nope"),
                ("grant_type", "client_credentials"),
            ],
            "invalid_client",
        ),
        (
            "missing secret",
            vec![("client_id", CLIENT_ID), ("grant_type", "client_credentials")],
            "invalid_client",
        ),
        (
            "other grant",
            vec![
                ("client_id", CLIENT_ID),
                ("client_secret", CLIENT_SECRET),
                ("grant_type", "password"),
            ],
            "unsupported_grant_type",
        ),
        (
            "no grant",
            vec![("client_id", CLIENT_ID), ("client_secret", CLIENT_SECRET)],
            "invalid_request",
        ),
    ];
    for (what, form, error) in cases {
        let r = c
            .post(url(&emu, "Auth/connect/token"))
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{what}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body, json!({ "error": error }), "{what}");
    }
}

#[tokio::test]
async fn expired_token_is_refused() {
    let emu = start().await;
    let c = client(&emu);
    let tok: Value = token_response(
        &c,
        &emu,
        CLIENT_ID_SHORT_TTL,
        "PSCANARY-client-secret-short-lived-0000000000000000000",
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(tok["expires_in"], 1);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = sign_in_header(
        &c,
        &emu,
        &format!("Bearer {}", tok["access_token"].as_str().unwrap()),
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn calls_without_a_valid_session_get_401() {
    let emu = start().await;
    let c = bare_client(&emu);
    for path in [
        "secrets-safe/secrets?path=team-a/db&title=password",
        "ManagedAccounts",
        "Requests",
        "secrets-safe/safes",
    ] {
        let r = get(&c, &emu, path).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{path}");
    }
    // A made-up cookie.
    let r = c
        .get(url(&emu, "secrets-safe/safes"))
        .header("Cookie", format!("{SESSION_COOKIE}=made-up"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // An Authorization header alone does not authorize a call other than SignAppIn.
    let r = c
        .get(url(&emu, "secrets-safe/safes"))
        .header("Authorization", format!("PS-Auth key={KEY_A}; runas=svc-team-a;"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn cookie_plus_authorization_header_works_like_the_python_library() {
    let emu = start().await;
    let c = client(&emu);
    let header = format!("PS-Auth key={KEY_A}; runas=svc-team-a;");
    assert_eq!(sign_in_header(&c, &emu, &header).await.status(), StatusCode::OK);
    let r = c
        .get(url(&emu, "secrets-safe/safes"))
        .header("Authorization", &header)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn sessions_expire_after_the_idle_time_and_calls_keep_them_alive() {
    let emu = start_with(Options {
        session_idle: Duration::from_millis(1500),
        ..Options::default()
    })
    .await;
    let c = client(&emu);
    sign_in(&c, &emu, "svc-team-a").await;
    // Calls every 300 ms keep it alive well past the 1.5 s idle limit.
    for _ in 0..7 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(get(&c, &emu, "secrets-safe/safes").await.status(), StatusCode::OK);
    }
    assert_eq!(state(&emu).await["sessions_open"], 1);
    tokio::time::sleep(Duration::from_millis(1800)).await;
    assert_eq!(state(&emu).await["sessions_open"], 0);
    assert_eq!(
        get(&c, &emu, "secrets-safe/safes").await.status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn sign_out_is_200_and_idempotent() {
    let emu = start().await;
    let c = client(&emu);
    sign_in(&c, &emu, "svc-team-a").await;
    assert_eq!(state(&emu).await["sessions_open"], 1);
    for _ in 0..2 {
        let r = c.post(url(&emu, "Auth/Signout")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    assert_eq!(state(&emu).await["sessions_open"], 0);
    assert_eq!(
        get(&c, &emu, "secrets-safe/safes").await.status(),
        StatusCode::UNAUTHORIZED
    );
    // Without any cookie.
    let r = bare_client(&emu)
        .post(url(&emu, "auth/signout"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn legacy_prefix_and_any_case_of_paths() {
    let emu = start().await;
    let c = client(&emu);
    let legacy = format!("{}/eEye.RetinaCS.Server/api/public/v3", emu.origin());
    let r = c
        .post(format!("{legacy}/Auth/SignAppIn"))
        .header("Authorization", format!("PS-Auth key={KEY_A}; runas=svc-team-a;"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let paths = [
        format!("{legacy}/secrets-safe/secrets?path=team-a/db&title=password"),
        format!(
            "{}/beyondtrust/API/Public/V3/Secrets-Safe/Secrets?path=team-a/db&title=password",
            emu.origin()
        ),
        format!(
            "{}/BEYONDTRUST/api/public/v3/SECRETS-SAFE/SECRETS/?PATH=team-a/db&TITLE=password",
            emu.origin()
        ),
        format!(
            "{}/eeye.retinacs.server/api/public/v3/secrets-safe/secrets?Path=team-a/db&Title=password",
            emu.origin()
        ),
    ];
    for p in paths {
        let r = c.get(&p).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{p}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v.as_array().map(Vec::len), Some(1), "{p}");
        assert_value(v[0]["Password"].as_str(), "PSCANARY-secret-pw-s3cret", &p);
    }
    // Both spellings of SignAppIn/SignAppin and Signout/SignOut.
    for p in [
        "Auth/SignAppIn",
        "Auth/SignAppin",
        "auth/signappin",
        "AUTH/SIGNAPPIN",
    ] {
        let r = c
            .post(url(&emu, p))
            .header("Authorization", format!("PS-Auth key={KEY_A}; runas=svc-team-a;"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{p}");
    }
    let r = c.post(url(&emu, "Auth/SignOut")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn unknown_paths_and_methods() {
    let emu = start().await;
    let c = client(&emu);
    assert_eq!(
        get(&c, &emu, "no/such/route").await.status(),
        StatusCode::NOT_FOUND
    );
    let r = c
        .get(format!("{}/BeyondTrust/api/public/v2/Requests", emu.origin()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        get(&c, &emu, "Auth/SignAppIn").await.status(),
        StatusCode::METHOD_NOT_ALLOWED
    );
    let r = c.delete(url(&emu, "Requests")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
}
